/* Why this file exists: game engines (Unity/C#, Godot, Unreal) and other languages bind native
 * libraries through C, so bora offers a C99 interface in llama.h's vocabulary: plain structs with
 * bora_*_default_params(), opaque handles, status codes with a thread-local message, callbacks with a
 * user_data pointer. It is implemented by bora_c_api.cpp (built as libbora.so, or compiled into your
 * program); this header alone needs nothing but a C99 compiler.
 *
 * Rules every function follows:
 *   - A function that can fail returns bora_status (BORA_OK = 0) or a handle (NULL on failure); the
 *     failure's message is then bora_last_error_message() on the same thread.
 *   - Strings are UTF-8 and NUL-terminated. Strings the library returns stay valid until the call
 *     named beside them; copy them to keep them.
 *   - A NULL params pointer means the defaults. No C++ exception ever leaves the library.
 *   - A model may be shared by sessions and schedulers on any threads; one session is used by one
 *     thread at a time; a scheduler's functions may be called from any thread (step() from one at a
 *     time). Callbacks run on the thread that made the call that calls them.
 */
#ifndef BORA_H
#define BORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(BORA_SHARED_LIBRARY)
#if defined(BORA_BUILDING_LIBRARY)
#define BORA_API __declspec(dllexport)
#else
#define BORA_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) || defined(__clang__)
#define BORA_API __attribute__((visibility("default")))
#else
#define BORA_API
#endif

/* The same numbers as bora.hpp's (a mismatch is a redefinition the compiler reports). */
#define BORA_VERSION_MAJOR 0
#define BORA_VERSION_MINOR 1
#define BORA_VERSION_PATCH 0

#ifdef __cplusplus
extern "C" {
#endif

/* ---- versions and errors ------------------------------------------------------------------- */

/* "MAJOR.MINOR.PATCH" of the library actually loaded (compare with the macros above). */
BORA_API const char* bora_version(void);

typedef enum bora_status {
  BORA_OK = 0,
  BORA_ERROR_IO = 1,               /* the operating system refused (open, read, map) */
  BORA_ERROR_FORMAT = 2,           /* the bytes do not follow the file format */
  BORA_ERROR_UNSUPPORTED = 3,      /* valid, but not something bora implements */
  BORA_ERROR_MISSING = 4,          /* a required tensor, key or tokenizer is absent */
  BORA_ERROR_SHAPE = 5,            /* a tensor's shape disagrees with the configuration */
  BORA_ERROR_INVALID_ARGUMENT = 6, /* the caller asked for something impossible (NULL, bad values) */
  BORA_ERROR_CONTEXT_FULL = 7,     /* no room left in the KV cache */
  BORA_ERROR_CANCELLED = 8,        /* a progress or abort callback said stop */
  BORA_ERROR_OUT_OF_MEMORY = 9,    /* a buffer could not be allocated */
  BORA_ERROR_INTERNAL = 10         /* a failure bora did not expect (a bug: please report it) */
} bora_status;

/* The failure of the last call on this thread that failed (BORA_OK and "" before any failure). The
 * message stays valid until the next failing call on this thread. */
BORA_API bora_status bora_last_error_code(void);
BORA_API const char* bora_last_error_message(void);
/* A short name for a status ("ok", "io", "context full", ...). */
BORA_API const char* bora_status_name(bora_status status);

/* ---- callbacks ------------------------------------------------------------------------------ */

/* Loading progress in [0, 1]; return false to cancel (the load then fails with BORA_ERROR_CANCELLED). */
typedef bool (*bora_progress_callback)(float progress, void* user_data);
/* Polled between layers while a prompt is processed; return true to abort (BORA_ERROR_CANCELLED). */
typedef bool (*bora_abort_callback)(void* user_data);
/* One piece of generated text (`length` bytes, also NUL-terminated, never half a UTF-8 character);
 * return false to stop generating (stop reason BORA_STOP_CALLBACK). */
typedef bool (*bora_piece_callback)(const char* piece, size_t length, void* user_data);

/* A host's job system (a game engine's workers) can run bora's parallel loops instead of threads of
 * bora's own: run(host, parts, task, job) must call task(job, part) once for every part in [0, parts),
 * on any threads, and return when every call has returned. */
typedef void (*bora_parallel_task)(void* job, int part);
typedef void (*bora_host_run)(void* host, int parts, bora_parallel_task task, void* job);

/* ---- models ----------------------------------------------------------------------------------- */

typedef struct bora_model bora_model;

/* How the KV cache stores keys and values: f16 (default), f32 (the exact path's), q8_0 (half of f16's
 * bytes, for long contexts; needs a head size that is a multiple of 32). */
typedef enum bora_kv_cache_type {
  BORA_KV_CACHE_F16 = 0,
  BORA_KV_CACHE_F32 = 1,
  BORA_KV_CACHE_Q8_0 = 2
} bora_kv_cache_type;

typedef struct bora_model_params {
  bora_progress_callback progress_callback; /* NULL: none */
  void* progress_user_data;
  int32_t kv_cache_type; /* a bora_kv_cache_type; F32 with f32_activations is the exact path */
  bool use_mmap;         /* map the files instead of reading them (instant open, slower decoding) */
} bora_model_params;

BORA_API bora_model_params bora_model_default_params(void);

/* Opens a .gguf file, a Hugging Face or Mistral model folder, or "ollama:NAME[:TAG]"; the
 * architecture is read from the files. NULL on failure. */
BORA_API bora_model* bora_model_load(const char* path, const bora_model_params* params);
/* Frees the model; every session and scheduler made from it must have been freed first. NULL is fine. */
BORA_API void bora_model_free(bora_model* model);

typedef struct bora_model_info {
  const char* architecture; /* as the files say ("llama", "mistral", "mixtral"); valid while the model lives */
  const char* preset;       /* the composition: "mistral" (dense) or "mixtral" (experts); static */
  int64_t n_vocab;
  int64_t n_ctx_train;      /* the trained context, 0 when the files do not say */
  int64_t n_embd;
  int64_t n_layer;
  int64_t n_head;
  int64_t n_head_kv;
  int64_t n_ff;             /* feed-forward width (per expert) */
  int64_t n_expert;         /* 0 for a dense model */
  int64_t n_expert_used;
  int64_t sliding_window;   /* 0: none */
  uint64_t weight_bytes_per_token; /* weights one generated token reads */
  int32_t token_bos;
  int32_t token_eos;
  bool has_tokenizer;       /* false: text in and out is refused (BORA_ERROR_MISSING) */
} bora_model_info;

BORA_API bora_status bora_model_get_info(const bora_model* model, bora_model_info* info);

/* ---- sampling --------------------------------------------------------------------------------- */

typedef struct bora_sample_params {
  float temperature;     /* <= 0: greedy */
  int32_t top_k;         /* <= 0: no limit */
  float top_p;           /* >= 1: off */
  float min_p;           /* <= 0: off */
  float repeat_penalty;  /* 1: off */
  int32_t repeat_last_n; /* tokens the penalty looks at (< 0: all) */
  uint64_t seed;         /* the same seed gives the same text, at any thread count */
  int32_t max_tokens;    /* tokens to generate at most (< 0: no limit, 0: only process the prompt) */
  const char* const* stop_strings; /* generation ends before any of these (not shown); may be NULL */
  size_t n_stop_strings;
} bora_sample_params;

BORA_API bora_sample_params bora_sample_default_params(void);

typedef enum bora_stop_reason {
  BORA_STOP_END_OF_SEQUENCE = 0, /* the model ended its text */
  BORA_STOP_MAX_TOKENS = 1,
  BORA_STOP_STOP_STRING = 2,
  BORA_STOP_CALLBACK = 3,        /* a piece callback returned false */
  BORA_STOP_CONTEXT_FULL = 4,
  BORA_STOP_CANCELLED = 5,       /* bora_scheduler_cancel */
  BORA_STOP_ERROR = 6            /* a scheduler sequence failed alone (see its status) */
} bora_stop_reason;

/* ---- sessions: one conversation ----------------------------------------------------------------- */

typedef struct bora_session bora_session;

typedef struct bora_session_params {
  int32_t n_ctx;           /* positions the KV cache holds (a sliding window rolls beyond) */
  int32_t n_batch;         /* prompt tokens processed together */
  int32_t n_threads;       /* threads for generation */
  int32_t n_threads_batch; /* threads for prompts (0: n_threads) */
  int32_t sliding_window;  /* -1: as the file says, 0: none, N: N keys */
  bool f32_activations;    /* the exact path (slower), as the reference computes */
  bora_abort_callback abort_callback; /* NULL: none */
  void* abort_user_data;
  bora_host_run host_run;  /* NULL: bora's own threads; else the host's, n_threads capped by host_n_threads */
  void* host;
  int32_t host_n_threads;  /* parts a loop is split into at most */
} bora_session_params;

BORA_API bora_session_params bora_session_default_params(void);
BORA_API bora_session* bora_session_create(const bora_model* model, const bora_session_params* params);
BORA_API void bora_session_free(bora_session* session);
/* Forgets the conversation: the next prompt starts at position 0. */
BORA_API bora_status bora_session_reset(bora_session* session);
/* Positions consumed so far (-1 for NULL). */
BORA_API int64_t bora_session_n_past(const bora_session* session);
/* Saves the conversation (tokens and KV cache) / restores it into a session of the same model and settings. */
BORA_API bora_status bora_session_save(const bora_session* session, const char* path);
BORA_API bora_status bora_session_load(bora_session* session, const char* path);

typedef struct bora_chat_message {
  const char* role;    /* "system", "user" or "assistant" */
  const char* content;
} bora_chat_message;

typedef struct bora_result {
  const char* text;        /* everything generated (stop string excluded); valid until the next call on this session */
  size_t text_length;
  int64_t n_prompt_tokens; /* tokens prefilled for this call */
  int64_t n_generated;
  int32_t stop_reason;     /* a bora_stop_reason */
} bora_result;

/* Continues the conversation with `text` (a BOS in front when it is empty), then generates,
 * calling on_piece (may be NULL) with each piece. `result` may be NULL. */
BORA_API bora_status bora_session_complete(bora_session* session, const char* text, const bora_sample_params* sample,
                                           bora_piece_callback on_piece, void* user_data, bora_result* result);
/* Renders the whole conversation with the model's chat template, reuses the cache for what is
 * unchanged since the last call, and generates the assistant's reply. */
BORA_API bora_status bora_session_chat(bora_session* session, const bora_chat_message* messages, size_t n_messages,
                                       const bora_sample_params* sample, bora_piece_callback on_piece, void* user_data,
                                       bora_result* result);

/* One token per call (a game frame): begin as complete/chat do, then bora_session_step until done. The
 * random state, half characters and stop strings carry over, so the steps give complete's/chat's text. */
BORA_API bora_status bora_session_begin_completion(bora_session* session, const char* text,
                                                   const bora_sample_params* sample);
BORA_API bora_status bora_session_begin_chat(bora_session* session, const bora_chat_message* messages,
                                             size_t n_messages, const bora_sample_params* sample);

typedef struct bora_step {
  const char* text;     /* text completed by this token, often "" (half a character waits); valid until the next call on this session */
  size_t text_length;
  int32_t token;        /* the token sampled, -1 when none */
  bool done;            /* the generation has ended (later steps say so again) */
  int32_t stop_reason;  /* a bora_stop_reason, once done */
} bora_step;

BORA_API bora_status bora_session_step(bora_session* session, bora_step* step);

/* ---- the batch scheduler: many sequences, one forward pass per step ------------------------------ */

typedef struct bora_scheduler bora_scheduler;
typedef uint64_t bora_seq_id;

typedef struct bora_scheduler_params {
  int32_t n_batch;         /* tokens per step, over all sequences */
  int32_t n_threads;       /* threads for steps of decoding tokens */
  int32_t n_threads_batch; /* threads for steps with prompt chunks (0: n_threads) */
  int32_t prefill_chunk;   /* prompt tokens a sequence processes per step (1..n_batch) */
  int32_t max_sequences;   /* sequences holding a KV cache at once (0: n_batch); more wait */
  bool f32_activations;
  bora_abort_callback abort_callback; /* polled during prompt chunks; true fails the step */
  void* abort_user_data;
  bora_host_run host_run;  /* as in bora_session_params */
  void* host;
  int32_t host_n_threads;
} bora_scheduler_params;

/* Called with each piece of one sequence's text, on the thread that calls bora_scheduler_step;
 * return false to stop that sequence (BORA_STOP_CALLBACK). */
typedef bool (*bora_sequence_piece_callback)(bora_seq_id id, const char* piece, size_t length, void* user_data);

typedef struct bora_request_params {
  const char* prompt;         /* tokenized with BOS, unless `tokens` is given */
  const int32_t* tokens;      /* the prompt as token ids, used as given (may be NULL) */
  size_t n_tokens;
  bora_sample_params sample;  /* max_tokens = 0 with keep: only process the prompt, to fork from */
  int32_t n_ctx;              /* 0: prompt + max_tokens */
  bool keep;                  /* keep the KV cache when finished, for bora_scheduler_fork */
  bool starts_text;           /* a reply of its own (drops the first piece's leading space, as chat does) */
  bora_sequence_piece_callback on_piece; /* may be NULL: poll with bora_scheduler_take_text */
  void* user_data;
} bora_request_params;

typedef enum bora_sequence_state {
  BORA_SEQUENCE_QUEUED = 0,
  BORA_SEQUENCE_PREFILLING = 1,
  BORA_SEQUENCE_GENERATING = 2,
  BORA_SEQUENCE_FINISHED = 3
} bora_sequence_state;

typedef struct bora_sequence_status {
  int32_t state;        /* a bora_sequence_state */
  int32_t stop_reason;  /* a bora_stop_reason, once finished */
  int32_t error;        /* a bora_status: why a sequence finished with BORA_STOP_ERROR */
  const char* error_message; /* "" unless error; valid until the next bora_scheduler_status on this thread */
  int64_t n_prompt_tokens;
  int64_t n_generated;
} bora_sequence_status;

BORA_API bora_scheduler_params bora_scheduler_default_params(void);
BORA_API bora_request_params bora_request_default_params(void);
BORA_API bora_scheduler* bora_scheduler_create(const bora_model* model, const bora_scheduler_params* params);
/* Frees the scheduler and every sequence it holds; no step may be running. */
BORA_API void bora_scheduler_free(bora_scheduler* scheduler);
/* Queues a sequence and returns at once with its id (any thread). */
BORA_API bora_status bora_scheduler_submit(bora_scheduler* scheduler, const bora_request_params* request,
                                           bora_seq_id* id);
/* A new sequence continuing `parent` (finished and kept) with the request's prompt (no BOS), its
 * cache copied: many sequences can share one prefix. */
BORA_API bora_status bora_scheduler_fork(bora_scheduler* scheduler, bora_seq_id parent,
                                         const bora_request_params* request, bora_seq_id* id);
/* One forward pass for every running sequence (one token each, or a prompt chunk). Call it from one
 * thread at a time; a sequence's own failure finishes that sequence instead of failing the step. */
BORA_API bora_status bora_scheduler_step(bora_scheduler* scheduler);
/* True when no sequence is queued or running (also for NULL). */
BORA_API bool bora_scheduler_idle(const bora_scheduler* scheduler);
BORA_API bora_status bora_scheduler_status(const bora_scheduler* scheduler, bora_seq_id id,
                                           bora_sequence_status* status);
/* The text produced since the last call for this sequence (whole characters); `length` may be NULL.
 * Valid until the next bora_scheduler_take_text on this thread. "" for an unknown id. */
BORA_API const char* bora_scheduler_take_text(bora_scheduler* scheduler, bora_seq_id id, size_t* length);
/* Stops a sequence at the next step (BORA_STOP_CANCELLED); its text so far stays readable. */
BORA_API bora_status bora_scheduler_cancel(bora_scheduler* scheduler, bora_seq_id id);
/* Forgets a finished sequence (text, status, kept cache); BORA_ERROR_INVALID_ARGUMENT while it runs. */
BORA_API bora_status bora_scheduler_release(bora_scheduler* scheduler, bora_seq_id id);

#ifdef __cplusplus
}
#endif

#endif /* BORA_H */
