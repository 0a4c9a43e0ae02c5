// Why this file exists: the one C++ file behind bora.h. CMake builds it as libbora.so (only bora_*
// exported); vendoring users compile it into their program. It is also the translation unit that
// compiles the SIMD kernels (BORA_IMPLEMENTATION), unless BORA_C_API_NO_IMPLEMENTATION says another
// file of the program does. Against the single header, define BORA_C_API_SINGLE_HEADER and put
// single_include/ on the include path. Every function catches what could be thrown (when exceptions
// are on at all), so no C++ exception reaches a C caller; errors become a status plus a message.
#ifndef BORA_BUILDING_LIBRARY
#define BORA_BUILDING_LIBRARY
#endif
#include "bora.h"  // beside this file: found whichever include path is given

#if !defined(BORA_C_API_NO_IMPLEMENTATION) && !defined(BORA_IMPLEMENTATION)
#define BORA_IMPLEMENTATION
#endif
#if defined(BORA_C_API_SINGLE_HEADER)
#include <bora.hpp>
#else
#include <bora/bora.hpp>
#endif

#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

static_assert(BORA_VERSION_MAJOR == 0 && BORA_VERSION_MINOR == 1 && BORA_VERSION_PATCH == 0,
              "bora.h and bora.hpp disagree on the version: update bora_version() too");

struct bora_model {
  std::unique_ptr<bora::LanguageModel> model;
};

struct bora_session {
  explicit bora_session(bora::Session s) : session(std::move(s)) {}
  bora::Session session;
  std::string text;  // what the last result or step points at
};

struct bora_scheduler {
  std::unique_ptr<bora::Scheduler> scheduler;
};

namespace {

struct LastError {
  bora_status code = BORA_OK;
  std::string message;
};
thread_local LastError t_last_error;
thread_local std::string t_taken_text;      // bora_scheduler_take_text's answer
thread_local std::string t_status_message;  // bora_scheduler_status's error_message

bora_status status_of(bora::ErrorCode code) {
  switch (code) {
    case bora::ErrorCode::kIo: return BORA_ERROR_IO;
    case bora::ErrorCode::kFormat: return BORA_ERROR_FORMAT;
    case bora::ErrorCode::kUnsupported: return BORA_ERROR_UNSUPPORTED;
    case bora::ErrorCode::kMissing: return BORA_ERROR_MISSING;
    case bora::ErrorCode::kShape: return BORA_ERROR_SHAPE;
    case bora::ErrorCode::kInvalidArgument: return BORA_ERROR_INVALID_ARGUMENT;
    case bora::ErrorCode::kContextFull: return BORA_ERROR_CONTEXT_FULL;
    case bora::ErrorCode::kCancelled: return BORA_ERROR_CANCELLED;
    case bora::ErrorCode::kOutOfMemory: return BORA_ERROR_OUT_OF_MEMORY;
  }
  return BORA_ERROR_INTERNAL;
}

int32_t stop_reason_of(bora::StopReason reason) {
  switch (reason) {
    case bora::StopReason::kEndOfSequence: return BORA_STOP_END_OF_SEQUENCE;
    case bora::StopReason::kMaxTokens: return BORA_STOP_MAX_TOKENS;
    case bora::StopReason::kStopString: return BORA_STOP_STOP_STRING;
    case bora::StopReason::kCallback: return BORA_STOP_CALLBACK;
    case bora::StopReason::kContextFull: return BORA_STOP_CONTEXT_FULL;
    case bora::StopReason::kCancelled: return BORA_STOP_CANCELLED;
    case bora::StopReason::kError: return BORA_STOP_ERROR;
  }
  return BORA_STOP_ERROR;
}

bora_status fail(bora_status code, const char* message) {
  t_last_error.code = code;
  t_last_error.message.assign(message);
  return code;
}

bora_status fail(const bora::Error& error) { return fail(status_of(error.code()), error.message()); }

bora_status invalid(const char* message) { return fail(BORA_ERROR_INVALID_ARGUMENT, message); }

}  // namespace

// BORA_C_TRY body BORA_C_CATCH(on_failure) runs body, turning anything thrown into a status;
// on_failure is what the function then returns. Without exceptions there is nothing to catch.
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
namespace {
// Short messages, so that recording them needs no allocation (the string's own small buffer holds
// them) even when memory ran out.
void fail_thrown_out_of_memory() { fail(BORA_ERROR_OUT_OF_MEMORY, "out of memory"); }
void fail_thrown_other() { fail(BORA_ERROR_INTERNAL, "C++ exception"); }
}  // namespace
#define BORA_C_TRY try {
#define BORA_C_CATCH(on_failure)            \
  }                                         \
  catch (const std::bad_alloc&) {           \
    fail_thrown_out_of_memory();            \
    return on_failure;                      \
  }                                         \
  catch (...) {                             \
    fail_thrown_other();                    \
    return on_failure;                      \
  }
#else
#define BORA_C_TRY {
#define BORA_C_CATCH(on_failure) }
#endif

namespace {

bool read_sample(const bora_sample_params* in, bora::SampleParams* sample, std::vector<std::string>* stop) {
  const bora_sample_params p = in != nullptr ? *in : bora_sample_default_params();
  if (p.n_stop_strings > 0 && p.stop_strings == nullptr) {
    invalid("sample params: n_stop_strings > 0 but stop_strings is NULL");
    return false;
  }
  if (!(p.temperature == p.temperature) || !(p.top_p == p.top_p) || !(p.min_p == p.min_p) ||
      !(p.repeat_penalty > 0.0f)) {
    invalid("sample params: temperature, top_p and min_p must be numbers, repeat_penalty > 0");
    return false;
  }
  sample->temperature = p.temperature;
  sample->top_k = p.top_k;
  sample->top_p = p.top_p;
  sample->min_p = p.min_p;
  sample->repeat_penalty = p.repeat_penalty;
  sample->repeat_last_n = p.repeat_last_n;
  sample->seed = p.seed;
  sample->max_tokens = p.max_tokens;
  stop->clear();
  for (size_t i = 0; i < p.n_stop_strings; ++i) {
    if (p.stop_strings[i] == nullptr) {
      invalid("sample params: a stop string is NULL");
      return false;
    }
    stop->emplace_back(p.stop_strings[i]);
  }
  return true;
}

bool read_messages(const bora_chat_message* messages, size_t n_messages, std::vector<bora::ChatMessage>* out) {
  if (messages == nullptr && n_messages > 0) {
    invalid("chat: messages is NULL");
    return false;
  }
  for (size_t i = 0; i < n_messages; ++i) {
    if (messages[i].role == nullptr || messages[i].content == nullptr) {
      invalid("chat: a message's role or content is NULL");
      return false;
    }
    out->push_back(bora::ChatMessage{messages[i].role, messages[i].content});
  }
  return true;
}

bool check_threads(int32_t n_batch, int32_t n_threads, int32_t n_threads_batch) {
  if (n_batch < 1 || n_threads < 1 || n_threads_batch < 0) {
    invalid("params: n_batch and n_threads must be >= 1, n_threads_batch >= 0");
    return false;
  }
  return true;
}

bool read_host(bora_host_run run, void* host, int32_t host_n_threads, bora::HostThreads* out) {
  if (run != nullptr && host_n_threads < 1) {
    invalid("params: host_n_threads must be >= 1 with a host_run");
    return false;
  }
  out->run = run;
  out->host = host;
  out->n_threads = run != nullptr ? host_n_threads : 1;
  return true;
}

bora::StreamCallback piece_callback(bora_piece_callback on_piece, void* user_data) {
  if (on_piece == nullptr) return nullptr;
  return [on_piece, user_data](std::string_view piece) {
    const std::string copy(piece);  // NUL-terminated for C
    return on_piece(copy.c_str(), copy.size(), user_data);
  };
}

void fill_result(bora_session* session, bora::GenerationResult generated, bora_result* result) {
  session->text = std::move(generated.text);
  if (result == nullptr) return;
  result->text = session->text.c_str();
  result->text_length = session->text.size();
  result->n_prompt_tokens = generated.n_prompt_tokens;
  result->n_generated = generated.n_generated;
  result->stop_reason = stop_reason_of(generated.stop_reason);
}

bool read_request(const bora_request_params* in, bora::Request* request) {
  if (in == nullptr) {
    invalid("request: NULL");
    return false;
  }
  if (in->tokens == nullptr && in->n_tokens > 0) {
    invalid("request: n_tokens > 0 but tokens is NULL");
    return false;
  }
  if (in->n_ctx < 0) {
    invalid("request: n_ctx < 0");
    return false;
  }
  if (!read_sample(&in->sample, &request->sample, &request->stop)) return false;
  if (in->prompt != nullptr) request->prompt = in->prompt;
  if (in->n_tokens > 0) request->tokens.assign(in->tokens, in->tokens + in->n_tokens);
  request->n_ctx = in->n_ctx;
  request->keep = in->keep;
  request->starts_text = in->starts_text;
  if (in->on_piece != nullptr) {
    const bora_sequence_piece_callback on_piece = in->on_piece;
    void* const user_data = in->user_data;
    request->on_piece = [on_piece, user_data](bora::SequenceId id, std::string_view piece) {
      const std::string copy(piece);
      return on_piece(id, copy.c_str(), copy.size(), user_data);
    };
  }
  return true;
}

}  // namespace

extern "C" {

const char* bora_version(void) { return "0.1.0"; }

bora_status bora_last_error_code(void) { return t_last_error.code; }

const char* bora_last_error_message(void) { return t_last_error.message.c_str(); }

const char* bora_status_name(bora_status status) {
  switch (status) {
    case BORA_OK: return "ok";
    case BORA_ERROR_IO: return bora::error_code_name(bora::ErrorCode::kIo);
    case BORA_ERROR_FORMAT: return bora::error_code_name(bora::ErrorCode::kFormat);
    case BORA_ERROR_UNSUPPORTED: return bora::error_code_name(bora::ErrorCode::kUnsupported);
    case BORA_ERROR_MISSING: return bora::error_code_name(bora::ErrorCode::kMissing);
    case BORA_ERROR_SHAPE: return bora::error_code_name(bora::ErrorCode::kShape);
    case BORA_ERROR_INVALID_ARGUMENT: return bora::error_code_name(bora::ErrorCode::kInvalidArgument);
    case BORA_ERROR_CONTEXT_FULL: return bora::error_code_name(bora::ErrorCode::kContextFull);
    case BORA_ERROR_CANCELLED: return bora::error_code_name(bora::ErrorCode::kCancelled);
    case BORA_ERROR_OUT_OF_MEMORY: return bora::error_code_name(bora::ErrorCode::kOutOfMemory);
    case BORA_ERROR_INTERNAL: return "internal";
  }
  return "unknown";
}

// ---- models ----------------------------------------------------------------------------------------

bora_model_params bora_model_default_params(void) {
  const bora::LoadParams defaults;
  bora_model_params p;
  std::memset(&p, 0, sizeof(p));
  p.kv_cache_type = defaults.kv_cache_type == bora::KvCacheType::kF32    ? BORA_KV_CACHE_F32
                    : defaults.kv_cache_type == bora::KvCacheType::kQ8_0 ? BORA_KV_CACHE_Q8_0
                                                                         : BORA_KV_CACHE_F16;
  p.use_mmap = defaults.use_mmap;
  return p;
}

bora_model* bora_model_load(const char* path, const bora_model_params* params) {
  BORA_C_TRY
  if (path == nullptr) {
    invalid("bora_model_load: path is NULL");
    return nullptr;
  }
  const bora_model_params p = params != nullptr ? *params : bora_model_default_params();
  if (p.kv_cache_type != BORA_KV_CACHE_F16 && p.kv_cache_type != BORA_KV_CACHE_F32 &&
      p.kv_cache_type != BORA_KV_CACHE_Q8_0) {
    invalid("bora_model_load: kv_cache_type must be BORA_KV_CACHE_F16, BORA_KV_CACHE_F32 or BORA_KV_CACHE_Q8_0");
    return nullptr;
  }
  bora::LoadParams load;
  load.progress_callback = p.progress_callback;
  load.progress_user_data = p.progress_user_data;
  load.kv_cache_type = p.kv_cache_type == BORA_KV_CACHE_F32    ? bora::KvCacheType::kF32
                       : p.kv_cache_type == BORA_KV_CACHE_Q8_0 ? bora::KvCacheType::kQ8_0
                                                               : bora::KvCacheType::kF16;
  load.use_mmap = p.use_mmap;
  auto loaded = bora::load_any(std::string(path), load);
  if (!loaded) {
    fail(loaded.error());
    return nullptr;
  }
  bora_model* model = new (std::nothrow) bora_model;
  if (model == nullptr) {
    fail(BORA_ERROR_OUT_OF_MEMORY, "bora_model_load: out of memory");
    return nullptr;
  }
  model->model = std::move(*loaded);
  return model;
  BORA_C_CATCH(nullptr)
}

void bora_model_free(bora_model* model) { delete model; }

bora_status bora_model_get_info(const bora_model* model, bora_model_info* info) {
  if (model == nullptr || info == nullptr) return invalid("bora_model_get_info: model or info is NULL");
  const bora::LanguageModel& m = *model->model;
  const bora::ModelConfig& c = m.config();
  std::memset(info, 0, sizeof(*info));
  info->architecture = c.architecture.c_str();
  info->preset = m.preset_name();
  info->n_vocab = c.vocab_size;
  info->n_ctx_train = c.context_length;
  info->n_embd = c.dim;
  info->n_layer = c.n_layers;
  info->n_head = c.n_heads;
  info->n_head_kv = c.n_kv_heads;
  info->n_ff = c.hidden_dim;
  info->n_expert = c.n_experts;
  info->n_expert_used = c.n_experts_used;
  info->sliding_window = c.sliding_window;
  info->weight_bytes_per_token = m.weight_bytes_per_token();
  const bora::Tokenizer* tokenizer = m.tokenizer();
  info->token_bos = tokenizer != nullptr ? tokenizer->vocabulary().bos_id : c.bos_id;
  info->token_eos = tokenizer != nullptr ? tokenizer->eos_id() : c.eos_id;
  info->has_tokenizer = tokenizer != nullptr;
  return BORA_OK;
}

bora_sample_params bora_sample_default_params(void) {
  const bora::SampleParams defaults;
  bora_sample_params p;
  std::memset(&p, 0, sizeof(p));
  p.temperature = defaults.temperature;
  p.top_k = defaults.top_k;
  p.top_p = defaults.top_p;
  p.min_p = defaults.min_p;
  p.repeat_penalty = defaults.repeat_penalty;
  p.repeat_last_n = defaults.repeat_last_n;
  p.seed = defaults.seed;
  p.max_tokens = defaults.max_tokens;
  return p;
}

// ---- sessions ---------------------------------------------------------------------------------------

bora_session_params bora_session_default_params(void) {
  const bora::SessionParams defaults;
  bora_session_params p;
  std::memset(&p, 0, sizeof(p));
  p.n_ctx = static_cast<int32_t>(defaults.n_ctx);
  p.n_batch = static_cast<int32_t>(defaults.n_batch);
  p.n_threads = defaults.n_threads;
  p.n_threads_batch = defaults.n_threads_batch;
  p.sliding_window = static_cast<int32_t>(defaults.sliding_window);
  p.f32_activations = defaults.f32_activations;
  return p;
}

bora_session* bora_session_create(const bora_model* model, const bora_session_params* params) {
  BORA_C_TRY
  if (model == nullptr) {
    invalid("bora_session_create: model is NULL");
    return nullptr;
  }
  const bora_session_params p = params != nullptr ? *params : bora_session_default_params();
  if (!check_threads(p.n_batch, p.n_threads, p.n_threads_batch)) return nullptr;
  if (p.n_ctx < 1 || p.sliding_window < -1) {
    invalid("bora_session_create: n_ctx must be >= 1 and sliding_window >= -1");
    return nullptr;
  }
  bora::SessionParams sp;
  sp.n_ctx = p.n_ctx;
  sp.n_batch = p.n_batch;
  sp.n_threads = p.n_threads;
  sp.n_threads_batch = p.n_threads_batch;
  sp.sliding_window = p.sliding_window;
  sp.f32_activations = p.f32_activations;
  sp.abort_callback = p.abort_callback;
  sp.abort_user_data = p.abort_user_data;
  if (!read_host(p.host_run, p.host, p.host_n_threads, &sp.host_threads)) return nullptr;
  auto session = model->model->session(sp);
  if (!session) {
    fail(session.error());
    return nullptr;
  }
  bora_session* made = new (std::nothrow) bora_session(std::move(*session));
  if (made == nullptr) fail(BORA_ERROR_OUT_OF_MEMORY, "bora_session_create: out of memory");
  return made;
  BORA_C_CATCH(nullptr)
}

void bora_session_free(bora_session* session) { delete session; }

bora_status bora_session_reset(bora_session* session) {
  if (session == nullptr) return invalid("bora_session_reset: session is NULL");
  session->session.reset();
  return BORA_OK;
}

int64_t bora_session_n_past(const bora_session* session) { return session != nullptr ? session->session.n_past() : -1; }

bora_status bora_session_save(const bora_session* session, const char* path) {
  BORA_C_TRY
  if (session == nullptr || path == nullptr) return invalid("bora_session_save: session or path is NULL");
  bora::Status saved = session->session.save(path);
  return saved ? BORA_OK : fail(saved.error());
  BORA_C_CATCH(t_last_error.code)
}

bora_status bora_session_load(bora_session* session, const char* path) {
  BORA_C_TRY
  if (session == nullptr || path == nullptr) return invalid("bora_session_load: session or path is NULL");
  bora::Status loaded = session->session.load(path);
  return loaded ? BORA_OK : fail(loaded.error());
  BORA_C_CATCH(t_last_error.code)
}

bora_status bora_session_complete(bora_session* session, const char* text, const bora_sample_params* sample,
                                  bora_piece_callback on_piece, void* user_data, bora_result* result) {
  BORA_C_TRY
  if (session == nullptr || text == nullptr) return invalid("bora_session_complete: session or text is NULL");
  bora::SampleParams sp;
  std::vector<std::string> stop;
  if (!read_sample(sample, &sp, &stop)) return t_last_error.code;
  auto generated = session->session.complete(text, sp, piece_callback(on_piece, user_data), stop);
  if (!generated) return fail(generated.error());
  fill_result(session, std::move(*generated), result);
  return BORA_OK;
  BORA_C_CATCH(t_last_error.code)
}

bora_status bora_session_chat(bora_session* session, const bora_chat_message* messages, size_t n_messages,
                              const bora_sample_params* sample, bora_piece_callback on_piece, void* user_data,
                              bora_result* result) {
  BORA_C_TRY
  if (session == nullptr) return invalid("bora_session_chat: session is NULL");
  bora::SampleParams sp;
  std::vector<std::string> stop;
  std::vector<bora::ChatMessage> conversation;
  if (!read_sample(sample, &sp, &stop) || !read_messages(messages, n_messages, &conversation)) return t_last_error.code;
  auto generated = session->session.chat(conversation, sp, piece_callback(on_piece, user_data), stop);
  if (!generated) return fail(generated.error());
  fill_result(session, std::move(*generated), result);
  return BORA_OK;
  BORA_C_CATCH(t_last_error.code)
}

bora_status bora_session_begin_completion(bora_session* session, const char* text, const bora_sample_params* sample) {
  BORA_C_TRY
  if (session == nullptr || text == nullptr) return invalid("bora_session_begin_completion: session or text is NULL");
  bora::SampleParams sp;
  std::vector<std::string> stop;
  if (!read_sample(sample, &sp, &stop)) return t_last_error.code;
  bora::Status begun = session->session.begin_completion(text, sp, stop);
  return begun ? BORA_OK : fail(begun.error());
  BORA_C_CATCH(t_last_error.code)
}

bora_status bora_session_begin_chat(bora_session* session, const bora_chat_message* messages, size_t n_messages,
                                    const bora_sample_params* sample) {
  BORA_C_TRY
  if (session == nullptr) return invalid("bora_session_begin_chat: session is NULL");
  bora::SampleParams sp;
  std::vector<std::string> stop;
  std::vector<bora::ChatMessage> conversation;
  if (!read_sample(sample, &sp, &stop) || !read_messages(messages, n_messages, &conversation)) return t_last_error.code;
  bora::Status begun = session->session.begin_chat(conversation, sp, stop);
  return begun ? BORA_OK : fail(begun.error());
  BORA_C_CATCH(t_last_error.code)
}

bora_status bora_session_step(bora_session* session, bora_step* step) {
  BORA_C_TRY
  if (session == nullptr || step == nullptr) return invalid("bora_session_step: session or step is NULL");
  auto stepped = session->session.step();
  if (!stepped) return fail(stepped.error());
  session->text = std::move(stepped->text);
  step->text = session->text.c_str();
  step->text_length = session->text.size();
  step->token = stepped->token;
  step->done = stepped->done;
  step->stop_reason = stop_reason_of(stepped->stop_reason);
  return BORA_OK;
  BORA_C_CATCH(t_last_error.code)
}

// ---- the batch scheduler ------------------------------------------------------------------------

bora_scheduler_params bora_scheduler_default_params(void) {
  const bora::SchedulerParams defaults;
  bora_scheduler_params p;
  std::memset(&p, 0, sizeof(p));
  p.n_batch = static_cast<int32_t>(defaults.n_batch);
  p.n_threads = defaults.n_threads;
  p.n_threads_batch = defaults.n_threads_batch;
  p.prefill_chunk = static_cast<int32_t>(defaults.prefill_chunk);
  p.max_sequences = static_cast<int32_t>(defaults.max_sequences);
  p.f32_activations = defaults.f32_activations;
  return p;
}

bora_request_params bora_request_default_params(void) {
  bora_request_params p;
  std::memset(&p, 0, sizeof(p));
  p.sample = bora_sample_default_params();
  return p;
}

bora_scheduler* bora_scheduler_create(const bora_model* model, const bora_scheduler_params* params) {
  BORA_C_TRY
  if (model == nullptr) {
    invalid("bora_scheduler_create: model is NULL");
    return nullptr;
  }
  const bora_scheduler_params p = params != nullptr ? *params : bora_scheduler_default_params();
  if (!check_threads(p.n_batch, p.n_threads, p.n_threads_batch)) return nullptr;
  bora::SchedulerParams sp;
  sp.n_batch = p.n_batch;
  sp.n_threads = p.n_threads;
  sp.n_threads_batch = p.n_threads_batch;
  sp.prefill_chunk = p.prefill_chunk;
  sp.max_sequences = p.max_sequences;
  sp.f32_activations = p.f32_activations;
  sp.abort_callback = p.abort_callback;
  sp.abort_user_data = p.abort_user_data;
  if (!read_host(p.host_run, p.host, p.host_n_threads, &sp.host_threads)) return nullptr;
  auto scheduler = model->model->scheduler(sp);
  if (!scheduler) {
    fail(scheduler.error());
    return nullptr;
  }
  bora_scheduler* made = new (std::nothrow) bora_scheduler;
  if (made == nullptr) {
    fail(BORA_ERROR_OUT_OF_MEMORY, "bora_scheduler_create: out of memory");
    return nullptr;
  }
  made->scheduler = std::move(*scheduler);
  return made;
  BORA_C_CATCH(nullptr)
}

void bora_scheduler_free(bora_scheduler* scheduler) { delete scheduler; }

bora_status bora_scheduler_submit(bora_scheduler* scheduler, const bora_request_params* request, bora_seq_id* id) {
  BORA_C_TRY
  if (scheduler == nullptr || id == nullptr) return invalid("bora_scheduler_submit: scheduler or id is NULL");
  if (request != nullptr && request->prompt == nullptr && request->n_tokens == 0) {
    return invalid("bora_scheduler_submit: the request has no prompt and no tokens");
  }
  bora::Request r;
  if (!read_request(request, &r)) return t_last_error.code;
  auto submitted = scheduler->scheduler->submit(std::move(r));
  if (!submitted) return fail(submitted.error());
  *id = *submitted;
  return BORA_OK;
  BORA_C_CATCH(t_last_error.code)
}

bora_status bora_scheduler_fork(bora_scheduler* scheduler, bora_seq_id parent, const bora_request_params* request,
                                bora_seq_id* id) {
  BORA_C_TRY
  if (scheduler == nullptr || id == nullptr) return invalid("bora_scheduler_fork: scheduler or id is NULL");
  bora::Request r;
  if (!read_request(request, &r)) return t_last_error.code;
  auto forked = scheduler->scheduler->fork(parent, std::move(r));
  if (!forked) return fail(forked.error());
  *id = *forked;
  return BORA_OK;
  BORA_C_CATCH(t_last_error.code)
}

bora_status bora_scheduler_step(bora_scheduler* scheduler) {
  BORA_C_TRY
  if (scheduler == nullptr) return invalid("bora_scheduler_step: scheduler is NULL");
  bora::Status stepped = scheduler->scheduler->step();
  return stepped ? BORA_OK : fail(stepped.error());
  BORA_C_CATCH(t_last_error.code)
}

bool bora_scheduler_idle(const bora_scheduler* scheduler) {
  BORA_C_TRY
  return scheduler == nullptr || scheduler->scheduler->idle();
  BORA_C_CATCH(true)
}

bora_status bora_scheduler_status(const bora_scheduler* scheduler, bora_seq_id id, bora_sequence_status* status) {
  BORA_C_TRY
  if (scheduler == nullptr || status == nullptr) return invalid("bora_scheduler_status: scheduler or status is NULL");
  auto found = scheduler->scheduler->status(id);
  if (!found) return fail(found.error());
  std::memset(status, 0, sizeof(*status));
  status->state = static_cast<int32_t>(found->state);  // bora_sequence_state has SequenceState's order
  status->stop_reason = stop_reason_of(found->stop_reason);
  status->error = found->error ? BORA_OK : status_of(found->error.error().code());
  t_status_message = found->error ? "" : found->error.error().str();
  status->error_message = t_status_message.c_str();
  status->n_prompt_tokens = found->n_prompt_tokens;
  status->n_generated = found->n_generated;
  return BORA_OK;
  BORA_C_CATCH(t_last_error.code)
}

const char* bora_scheduler_take_text(bora_scheduler* scheduler, bora_seq_id id, size_t* length) {
  BORA_C_TRY
  t_taken_text.clear();
  if (scheduler != nullptr) t_taken_text = scheduler->scheduler->take_text(id);
  if (length != nullptr) *length = t_taken_text.size();
  return t_taken_text.c_str();
  BORA_C_CATCH("")
}

bora_status bora_scheduler_cancel(bora_scheduler* scheduler, bora_seq_id id) {
  BORA_C_TRY
  if (scheduler == nullptr) return invalid("bora_scheduler_cancel: scheduler is NULL");
  scheduler->scheduler->cancel(id);
  return BORA_OK;
  BORA_C_CATCH(t_last_error.code)
}

bora_status bora_scheduler_release(bora_scheduler* scheduler, bora_seq_id id) {
  BORA_C_TRY
  if (scheduler == nullptr) return invalid("bora_scheduler_release: scheduler is NULL");
  if (!scheduler->scheduler->release(id)) return invalid("bora_scheduler_release: no such sequence, or it is still running");
  return BORA_OK;
  BORA_C_CATCH(t_last_error.code)
}

}  // extern "C"

static_assert(static_cast<int>(bora::SequenceState::kQueued) == BORA_SEQUENCE_QUEUED &&
                  static_cast<int>(bora::SequenceState::kPrefilling) == BORA_SEQUENCE_PREFILLING &&
                  static_cast<int>(bora::SequenceState::kGenerating) == BORA_SEQUENCE_GENERATING &&
                  static_cast<int>(bora::SequenceState::kFinished) == BORA_SEQUENCE_FINISHED,
              "bora_sequence_state must follow bora::SequenceState");
