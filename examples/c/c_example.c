/* Why this file exists: the smallest C program on bora's C API (bora.h, linked to libbora), as a
 * binding author would start: load with progress, read the model's info, stream a completion.
 *     c_example MODEL PROMPT
 * It is C99 and builds with -std=c99 -pedantic -Werror against bora.h alone. */
#include <stdio.h>

#include "bora/bora.h"

static bool show_progress(float progress, void* user_data) {
  int* last_percent = (int*)user_data;
  int percent = (int)(progress * 100.0f);
  if (percent >= *last_percent + 25) {
    fprintf(stderr, "loading: %d%%\n", percent);
    *last_percent = percent;
  }
  return true; /* false would cancel the load */
}

static bool print_piece(const char* piece, size_t length, void* user_data) {
  (void)user_data;
  fwrite(piece, 1, length, stdout);
  fflush(stdout);
  return true; /* false would stop generating */
}

int main(int argc, char** argv) {
  bora_model_params model_params = bora_model_default_params();
  bora_session_params session_params = bora_session_default_params();
  bora_sample_params sample = bora_sample_default_params();
  bora_model_info info;
  bora_result result;
  bora_model* model;
  bora_session* session;
  int last_percent = -25;

  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL PROMPT\n", argv[0]);
    return 2;
  }
  fprintf(stderr, "bora %s\n", bora_version());
  model_params.progress_callback = show_progress;
  model_params.progress_user_data = &last_percent;
  model = bora_model_load(argv[1], &model_params);
  if (model == NULL) {
    fprintf(stderr, "error (%s): %s\n", bora_status_name(bora_last_error_code()), bora_last_error_message());
    return 1;
  }
  bora_model_get_info(model, &info);
  fprintf(stderr, "%s: %lld layers, %lld-wide, vocabulary of %lld\n", info.preset, (long long)info.n_layer,
          (long long)info.n_embd, (long long)info.n_vocab);

  session_params.n_ctx = 512;
  session_params.n_threads = 2;
  session = bora_session_create(model, &session_params);
  if (session == NULL) {
    fprintf(stderr, "error: %s\n", bora_last_error_message());
    bora_model_free(model);
    return 1;
  }
  sample.temperature = 0.0f; /* greedy: the same text every run */
  sample.max_tokens = 40;
  fputs(argv[2], stdout);
  if (bora_session_complete(session, argv[2], &sample, print_piece, NULL, &result) != BORA_OK) {
    fprintf(stderr, "\nerror: %s\n", bora_last_error_message());
    bora_session_free(session);
    bora_model_free(model);
    return 1;
  }
  printf("\n");
  fprintf(stderr, "%lld prompt tokens, %lld generated\n", (long long)result.n_prompt_tokens,
          (long long)result.n_generated);
  bora_session_free(session);
  bora_model_free(model);
  return 0;
}
