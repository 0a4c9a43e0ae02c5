// Why this file exists: desktop apps, editors and scripts talk to language models over OpenAI's HTTP
// API, and code written for Amazon Bedrock's Mistral models over InvokeModel. This program answers
// both for one model, in process, with every request sharing forward passes through bora::Scheduler;
// the same clients later move to vLLM (or Bedrock) by changing only the base URL.
//
//   serve -m MODEL [--host 127.0.0.1] [--port 8080] [--parallel N] [--ctx N] [--threads N]
//         [--api-key KEY] [--max-queue N] [--max-body BYTES] [--model-name NAME]
// The kernels are compiled once for all examples (examples/shared/bora_implementation.cpp); a program
// of one file defines BORA_IMPLEMENTATION just before this include instead.
#include "bora/bora.hpp"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "args.hpp"
#include "generation_options.hpp"
#include "serve/api_request.hpp"
#include "serve/api_response.hpp"
#include "serve/engine.hpp"
#include "serve/prompt.hpp"

namespace {

using serve::Api;
using serve::ApiError;

void usage() {
  std::fprintf(stderr,
               "usage: serve -m MODEL [--host 127.0.0.1] [--port 8080] [--parallel N] [--ctx N] [--threads N]\n"
               "             [--api-key KEY] [--max-queue N] [--max-body BYTES] [--model-name NAME] [--kv-type f16|q8_0|f32]\n"
               "  OpenAI: POST /v1/chat/completions, POST /v1/completions (streamed or not), GET /v1/models\n"
               "          response_format json_object / json_schema; chat: tools, tool_choice, tool messages\n"
               "  Bedrock (Mistral): POST /model/{modelId}/invoke        GET /health\n"
               "  --port 0        take a free port (the 'listening on' line names it)\n"
               "  --parallel N    sequences generated at once (default 4); --max-queue N more may wait (default 32)\n"
               "  --ctx N         positions per sequence: prompt + reply (default 4096, at most the model's)\n"
               "  --api-key KEY   require 'Authorization: Bearer KEY' (all but /health)\n"
               "  --max-body B    largest request body in bytes (default 1048576; larger: 413)\n");
}

struct Options {
  std::string model_path;
  std::string model_name;  // the id /v1/models lists; default: the file's name
  std::string host = "127.0.0.1";
  int port = 8080;
  int parallel = 4;
  int64_t ctx = 4096;
  int threads = 0;
  bora::LoadParams load;
  std::string api_key;
  int max_queue = 32;
  size_t max_body = size_t{1} << 20;
};

// "models/mistral-7b-instruct-v0.2.Q4_K_M.gguf" -> "mistral-7b-instruct-v0.2.Q4_K_M".
std::string name_from_path(std::string path) {
  if (path.compare(0, 7, "ollama:") == 0) return path.substr(7);
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.find_last_of('/');
  if (slash != std::string::npos) path = path.substr(slash + 1);
  if (path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) path.resize(path.size() - 5);
  return path;
}

// Compares in time independent of where the texts differ, so the key cannot be guessed byte by byte.
bool same_secret(const std::string& given, const std::string& expected) {
  unsigned char difference = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) {
    difference |= static_cast<unsigned char>(given[i] ^ expected[i % std::max<size_t>(expected.size(), 1)]);
  }
  return difference == 0;
}

const char* finish_reason_of(bora::StopReason reason) {
  switch (reason) {
    case bora::StopReason::kMaxTokens:
    case bora::StopReason::kContextFull: return "length";
    default: return "stop";
  }
}

// An outcome that is not an answer: cancelled by a shutdown, or failed.
bool outcome_failed(const serve::Outcome& outcome, ApiError* error) {
  if (outcome.reason == bora::StopReason::kCancelled) {
    error->status = 503;
    error->type = "server_error";
    error->code = "shutting_down";
    error->message = "the server is shutting down";
    return true;
  }
  if (outcome.reason == bora::StopReason::kError) {
    error->status = 500;
    error->type = "server_error";
    error->code = "generation_failed";
    error->message = outcome.error;
    return true;
  }
  return false;
}

// The routes, over one model and one engine.
class Service {
 public:
  Service(const Options& options, const bora::Tokenizer& tokenizer, bora::ChatTemplate chat_template,
          serve::Engine& engine)
      : options_(options), tokenizer_(tokenizer), prompts_(tokenizer, chat_template), engine_(engine),
        started_(static_cast<int64_t>(std::time(nullptr))), random_(std::random_device{}()) {
    char prefix[16];
    std::snprintf(prefix, sizeof(prefix), "%08" PRIx32, static_cast<uint32_t>(random_()));
    id_prefix_ = prefix;
  }

  void install(httplib::Server& server) {
    server.set_payload_max_length(options_.max_body);
    server.set_keep_alive_max_count(1000);
    server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      return before_routing(req, res);
    });
    server.set_error_handler([this](const httplib::Request& req, httplib::Response& res) { fill_error(req, res); });
    server.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      std::fprintf(stderr, "serve: %s %s %d\n", req.method.c_str(), req.path.c_str(), res.status);
    });
    server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const bool stopping = engine_.stopping();
      res.status = stopping ? 503 : 200;
      serve::JsonWriter w;
      w.object().key("status").string(stopping ? "shutting down" : "ok");
      w.key("requests_in_flight").integer(static_cast<int64_t>(engine_.in_flight())).end();
      res.set_content(w.take(), "application/json");
    });
    server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(serve::models_body(options_.model_name, started_), "application/json");
    });
    server.Post("/v1/chat/completions",
                [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
                  generate(Api::kChat, req, res, reader);
                });
    server.Post("/v1/completions",
                [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
                  generate(Api::kCompletion, req, res, reader);
                });
    server.Post(R"(/model/([^/]+)/invoke)",
                [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
                  generate(Api::kBedrock, req, res, reader);
                });
  }

 private:
  static bool is_bedrock(const httplib::Request& req) { return req.path.compare(0, 7, "/model/") == 0; }

  void reply_error(const httplib::Request& req, httplib::Response& res, const ApiError& error) {
    res.status = error.status;
    if (error.status == 429) res.set_header("Retry-After", "1");
    if (error.status == 503) res.set_header("Connection", "close");
    if (!is_bedrock(req)) {
      res.set_content(serve::error_body(error), "application/json");
      return;
    }
    // Bedrock's clients name the exception from this header.
    const char* kind = error.status == 429   ? "ThrottlingException"
                       : error.status == 503 ? "ServiceUnavailableException"
                       : error.status == 401 ? "AccessDeniedException"
                       : error.status == 404 ? "ResourceNotFoundException"
                       : error.status >= 500 ? "InternalServerException"
                                             : "ValidationException";
    res.set_header("x-amzn-ErrorType", kind);
    res.set_content(serve::bedrock_error_body(error.message), "application/json");
  }

  httplib::Server::HandlerResponse before_routing(const httplib::Request& req, httplib::Response& res) {
    if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (engine_.stopping()) {
      ApiError error;
      error.status = 503;
      error.type = "server_error";
      error.code = "shutting_down";
      error.message = "the server is shutting down";
      reply_error(req, res, error);
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!options_.api_key.empty() &&
        !same_secret(req.get_header_value("Authorization"), "Bearer " + options_.api_key)) {
      ApiError error;
      error.status = 401;
      error.code = "invalid_api_key";
      error.message = "missing or wrong API key: send 'Authorization: Bearer KEY'";
      res.set_header("WWW-Authenticate", "Bearer");
      reply_error(req, res, error);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  }

  // Errors httplib answers itself (no route, a body over the limit, a malformed request line) get a
  // JSON body too.
  void fill_error(const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    ApiError error;
    error.status = res.status;
    switch (res.status) {
      case 404: error.message = "no route " + req.method + " " + req.path.substr(0, 200); error.code = "not_found"; break;
      case 413: error.message = too_large_message(); error.code = "request_too_large"; break;
      case 414: error.message = "the request line is too long"; break;
      default:
        error.message = res.status >= 500 ? "internal server error" : "bad request";
        if (res.status >= 500) error.type = "server_error";
    }
    reply_error(req, res, error);
  }

  std::string too_large_message() const {
    return "the request body is larger than this server accepts (" + std::to_string(options_.max_body) +
           " bytes, --max-body)";
  }

  // Reads the body (at most max_body bytes); false with the error to answer otherwise.
  bool read_body(const httplib::ContentReader& reader, httplib::Response& res, std::string* body, ApiError* error) {
    // A body over the limit is still read (and dropped) up to this much, so the client, still
    // sending, gets the 413 instead of a broken pipe; one that sends far more is cut off.
    const size_t drain_limit = std::max<size_t>(16 * options_.max_body, size_t{32} << 20);
    size_t seen = 0;
    bool too_large = false;
    const bool complete = reader([&](const char* data, size_t size) {
      seen += size;
      if (seen > options_.max_body) {
        too_large = true;
        return seen <= drain_limit;
      }
      body->append(data, size);
      return true;
    });
    if (too_large || res.status == 413) {
      *error = serve::invalid_request(too_large_message(), "", "request_too_large");
      error->status = 413;
      return false;
    }
    if (!complete) {
      *error = serve::invalid_request("the request body could not be read", "", "invalid_body");
      return false;
    }
    return true;
  }

  uint64_t random_seed() {
    std::lock_guard<std::mutex> lock(random_mutex_);
    return random_();
  }

  std::string next_id(Api api) {
    char suffix[40];
    std::snprintf(suffix, sizeof(suffix), "%s%08" PRIx64, id_prefix_.c_str(), ++request_count_);
    return std::string(api == Api::kChat ? "chatcmpl-" : "cmpl-") + suffix;
  }

  // Every request's constraint walks the same vocabulary trie, built once (not per request).
  bora::GrammarConstraintOptions constraint_options() const {
    bora::GrammarConstraintOptions options;
    options.vocabulary = vocabulary_;
    return options;
  }

  // response_format and tools: the constraint sampling is held to, and the token that marks a reply's
  // calls ([TOOL_CALLS]; -1 when the reply cannot have any).
  bool prepare_structure(const serve::GenerationRequest& request, bora::SampleParams* sample, int32_t* mark_token,
                         ApiError* error) {
    *mark_token = -1;
    if (request.response_format != serve::ResponseFormat::kText) {
      auto grammar = request.response_format == serve::ResponseFormat::kJsonObject
                         ? bora::json_object_grammar()
                         : bora::json_schema_grammar(request.json_schema);
      bora::Expected<std::shared_ptr<const bora::GrammarConstraint>> constraint =
          grammar ? bora::GrammarConstraint::create(std::move(*grammar), tokenizer_, constraint_options())
                  : bora::Expected<std::shared_ptr<const bora::GrammarConstraint>>(grammar.error());
      if (!constraint) {
        *error = serve::invalid_request("'response_format': " + constraint.error().str(), "response_format", "invalid_schema");
        return false;
      }
      sample->constraint = *constraint;
    }
    if (request.tools.empty() || request.tool_choice == serve::ToolChoice::kNone) return true;
    *mark_token = bora::tool_calls_token(tokenizer_);
    if (prompts_.chat_template() == bora::ChatTemplate::kMistralV1 || *mark_token < 0) {
      *error = serve::invalid_request(
          "'tools': this model has no tool tokens (chat template mistral-v1: Mistral 7B v0.1/v0.2, Mixtral 8x7B v0.1); "
          "function calling needs a model with a v2/v3 tokenizer such as Mistral 7B v0.3. For structured output with "
          "this model, use response_format json_schema",
          "tools", "unsupported_parameter");
      return false;
    }
    if (request.tool_choice == serve::ToolChoice::kAuto) return true;  // free to answer or call; parsed if it calls
    bora::ToolCallGrammarOptions options;
    if (request.tool_choice == serve::ToolChoice::kNamed) options.only_function = request.tool_choice_name;
    options.max_calls = request.parallel_tool_calls ? 8 : 1;
    auto constraint = bora::tool_calls_constraint(request.tools, tokenizer_, options, vocabulary_);
    if (!constraint) {
      *error = serve::invalid_request("'tools': " + constraint.error().str(), "tools", "invalid_schema");
      return false;
    }
    sample->constraint = *constraint;
    return true;
  }

  // The reply's calls: the text after the mark, parsed, each call with a fresh id (9 alphanumeric
  // characters, as vLLM's Mistral parser expects); `text` keeps what came before. False (nothing
  // changes) without a mark or when the text after it is not calls.
  bool split_tool_calls(std::string* text, int64_t mark, std::vector<bora::ToolCall>* calls) {
    if (mark < 0 || static_cast<size_t>(mark) > text->size()) return false;
    auto parsed = bora::parse_tool_calls(std::string_view(*text).substr(static_cast<size_t>(mark)));
    if (!parsed) return false;
    bora::Xoshiro256 rng(random_seed());
    for (bora::ToolCall& call : *parsed) call.id = bora::make_tool_call_id(rng);
    *calls = std::move(*parsed);
    text->resize(static_cast<size_t>(mark));
    return true;
  }

  void generate(Api api, const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    std::string body;
    ApiError error;
    serve::GenerationRequest request;
    std::vector<int32_t> prompt;
    int32_t mark_token = -1;
    if (!read_body(reader, res, &body, &error) || !serve::parse_generation_request(api, body, &request, &error) ||
        !prepare_structure(request, &request.sample, &mark_token, &error) || !prompts_.build(request, &prompt, &error)) {
      if (error.status == 413) res.set_header("Connection", "close");
      return reply_error(req, res, error);
    }
    const int64_t n_prompt = static_cast<int64_t>(prompt.size());
    if (n_prompt >= options_.ctx) {
      error = serve::invalid_request("the prompt has " + std::to_string(n_prompt) +
                                         " tokens; this server's context holds " + std::to_string(options_.ctx) +
                                         " positions per request (--ctx), prompt and reply together",
                                     api == Api::kChat ? "messages" : "prompt", "context_length_exceeded");
      return reply_error(req, res, error);
    }

    bora::Request job;
    job.tokens = std::move(prompt);
    job.sample = request.sample;
    if (!request.seed_given) job.sample.seed = random_seed();
    job.stop = request.stop;
    // A chat reply is a text of its own: its first piece loses the space SentencePiece puts in front
    // (as Session::chat does), unless it continues an assistant prefix.
    job.starts_text = api == Api::kChat && !request.continue_final_message;
    // Tokens the reply may not have: EOS with ignore_eos, [TOOL_CALLS] with tool_choice "none".
    std::vector<int32_t> forbidden;
    if (request.ignore_eos) forbidden.push_back(prompts_.eos_id());
    if (request.tool_choice == serve::ToolChoice::kNone && !request.tools.empty()) {
      forbidden.push_back(bora::tool_calls_token(tokenizer_));
    }
    if (!forbidden.empty()) {
      job.on_logits = [forbidden](bora::SequenceId, float* logits, int64_t n_vocab) {
        for (const int32_t id : forbidden) {
          if (id >= 0 && id < n_vocab) logits[id] = -std::numeric_limits<float>::infinity();
        }
      };
    }
    // The cache holds the prompt and at most max_tokens more, within --ctx; a reply that reaches the
    // end of --ctx stops with finish_reason "length".
    const int64_t wanted = job.sample.max_tokens >= 0 ? n_prompt + job.sample.max_tokens : options_.ctx;
    job.n_ctx = std::min(wanted, options_.ctx);

    serve::Engine::Admission admission = engine_.submit(std::move(job), mark_token);
    if (admission.refusal != serve::Engine::Refusal::kNone) {
      error = serve::invalid_request(admission.message, api == Api::kChat ? "messages" : "prompt");
      if (admission.refusal == serve::Engine::Refusal::kBusy) {
        error.status = 429;
        error.type = "rate_limit_error";
        error.code = "too_many_requests";
      } else if (admission.refusal == serve::Engine::Refusal::kStopping) {
        error.status = 503;
        error.type = "server_error";
        error.code = "shutting_down";
      }
      return reply_error(req, res, error);
    }

    serve::ResponseHeader header{next_id(api), static_cast<int64_t>(std::time(nullptr)), options_.model_name};
    if (request.stream && api != Api::kBedrock) {
      return stream(api, res, std::move(header), admission, request.include_usage, mark_token >= 0);
    }

    std::string text;
    serve::Outcome outcome;
    admission.completion->wait_until_finished(&text, &outcome);
    if (outcome_failed(outcome, &error)) return reply_error(req, res, error);
    const char* finish_reason = finish_reason_of(outcome.reason);
    if (api == Api::kBedrock) {
      res.set_content(serve::bedrock_body(text, finish_reason), "application/json");
      return;
    }
    std::vector<bora::ToolCall> calls;
    if (mark_token >= 0 && split_tool_calls(&text, admission.completion->mark(), &calls)) finish_reason = "tool_calls";
    const serve::Usage usage{outcome.n_prompt_tokens, outcome.n_generated};
    res.set_content(serve::completion_body(api, header, text, finish_reason, usage, calls), "application/json");
  }

  // Server-sent events: one `data: {chunk}` per piece of text as the scheduler produces it, then the
  // chunk with finish_reason, the usage chunk when asked, and `data: [DONE]`. A write that fails
  // (the client left) cancels the sequence. With tools, the text after [TOOL_CALLS] is held back and
  // sent, once it parses, as one chunk of whole tool_calls deltas before the finish_reason chunk.
  struct StreamState {
    Api api;
    serve::ResponseHeader header;
    serve::Engine::Admission admission;
    bool include_usage;
    bool tools;
    bool started = false;
    bool ended = false;
    int64_t taken = 0;       // bytes of output taken from the Completion so far
    std::string calls_text;  // the text after the mark
  };

  void stream(Api api, httplib::Response& res, serve::ResponseHeader header, const serve::Engine::Admission& admission,
              bool include_usage, bool tools) {
    auto state = std::make_shared<StreamState>(StreamState{api, std::move(header), admission, include_usage, tools, false,
                                                           false, 0, std::string()});
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    engine_.response_opened();
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, state](size_t, httplib::DataSink& sink) { return stream_step(*state, sink); },
        [this, state](bool) {
          if (!state->ended) engine_.cancel(state->admission.id);
          engine_.response_closed();
        });
  }

  bool stream_step(StreamState& s, httplib::DataSink& sink) {
    auto send = [&](const std::string& data) {
      const std::string event = "data: " + data + "\n\n";
      return sink.write(event.data(), event.size());
    };
    if (!s.started) {
      s.started = true;
      if (s.api == Api::kChat && !send(serve::chunk_body(s.api, s.header, "assistant", "", nullptr, s.include_usage))) {
        return false;
      }
    }
    std::string text;
    serve::Outcome outcome;
    const bool finished = s.admission.completion->wait_for(std::chrono::milliseconds(250), &text, &outcome);
    const int64_t mark = s.tools ? s.admission.completion->mark() : -1;
    if (mark >= 0) {  // the mark comes before any text after it, so it splits this piece or a later one
      const size_t content = static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(static_cast<int64_t>(text.size()), mark - s.taken)));
      s.calls_text += text.substr(content);
      s.taken += static_cast<int64_t>(text.size());
      text.resize(content);
    } else {
      s.taken += static_cast<int64_t>(text.size());
    }
    if (!text.empty() && !send(serve::chunk_body(s.api, s.header, nullptr, text, nullptr, s.include_usage))) return false;
    if (!finished) return true;
    s.ended = true;
    ApiError error;
    if (outcome_failed(outcome, &error)) {
      if (!send(serve::error_body(error))) return false;
    } else {
      const char* reason = finish_reason_of(outcome.reason);
      if (mark >= 0) {
        std::vector<bora::ToolCall> calls;
        if (split_tool_calls(&s.calls_text, 0, &calls)) {
          if (!send(serve::tool_calls_chunk_body(s.header, calls, s.include_usage))) return false;
          reason = "tool_calls";
        } else if (!s.calls_text.empty() &&
                   !send(serve::chunk_body(s.api, s.header, nullptr, s.calls_text, nullptr, s.include_usage))) {
          return false;  // not calls after all: the text is the reply's content
        }
      }
      if (!send(serve::chunk_body(s.api, s.header, nullptr, "", reason, s.include_usage))) return false;
      if (s.include_usage &&
          !send(serve::usage_chunk_body(s.api, s.header, serve::Usage{outcome.n_prompt_tokens, outcome.n_generated}))) {
        return false;
      }
    }
    if (!send("[DONE]")) return false;
    sink.done();
    return true;
  }

  const Options& options_;
  const bora::Tokenizer& tokenizer_;
  const std::shared_ptr<const bora::VocabularyTrie> vocabulary_ = bora::VocabularyTrie::build(tokenizer_);
  serve::PromptBuilder prompts_;
  serve::Engine& engine_;
  const int64_t started_;
  std::string id_prefix_;
  std::atomic<uint64_t> request_count_{0};
  std::mutex random_mutex_;
  std::mt19937_64 random_;
};

std::string url_host(const std::string& host) { return host.find(':') != std::string::npos ? "[" + host + "]" : host; }

}  // namespace

int main(int argc, char** argv) {
  // SIGINT and SIGTERM go to one thread that shuts down in order; every thread started from here on
  // inherits the mask. A client that leaves must not kill the process with SIGPIPE.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Options options;
  options.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  example_args::Parser args(argc, argv, "serve", usage);
  while (args.next()) {
    if (args.is("-m", "--model")) options.model_path = args.text();
    else if (args.is("--host")) options.host = args.text();
    else if (args.is("--port")) options.port = static_cast<int>(args.integer(0, 65535));
    else if (args.is("--parallel")) options.parallel = static_cast<int>(args.integer(1, 1024));
    else if (args.is("--ctx")) options.ctx = args.integer(16, int64_t{1} << 24);
    else if (args.is("-t", "--threads")) options.threads = static_cast<int>(args.integer(1, 1024));
    else if (args.is("--kv-type")) options.load.kv_cache_type = example_args::kv_cache_type(args);
    else if (args.is("--api-key")) options.api_key = args.text();
    else if (args.is("--max-queue")) options.max_queue = static_cast<int>(args.integer(0, 100000));
    else if (args.is("--max-body")) options.max_body = static_cast<size_t>(args.integer(1024, int64_t{1} << 30));
    else if (args.is("--model-name")) options.model_name = args.text();
    else if (args.is("-h", "--help")) { usage(); return 0; }
    else args.unknown();
  }
  if (options.model_path.empty()) args.fail("-m MODEL is required");
  if (options.model_name.empty()) options.model_name = name_from_path(options.model_path);

  auto model = bora::load_any(options.model_path, options.load);
  if (!model) { std::fprintf(stderr, "serve: %s\n", model.error().message()); return 1; }
  const bora::Tokenizer* tokenizer = (*model)->tokenizer();
  if (tokenizer == nullptr) { std::fprintf(stderr, "serve: %s has no tokenizer\n", options.model_path.c_str()); return 1; }
  const int64_t trained = (*model)->config().context_length;
  if (trained > 0 && options.ctx > trained) {
    std::fprintf(stderr, "serve: --ctx %lld is more than the model's context (%lld); using %lld\n",
                 (long long)options.ctx, (long long)trained, (long long)trained);
    options.ctx = trained;
  }

  bora::SchedulerParams params;
  params.n_threads = options.threads;
  params.n_threads_batch = options.threads;
  params.prefill_chunk = 64;
  // Room for every running sequence's next token plus one whole prompt chunk in each step, so
  // prompts keep moving while others decode.
  params.n_batch = options.parallel + params.prefill_chunk;
  params.max_sequences = options.parallel;
  auto scheduler = (*model)->scheduler(params);
  if (!scheduler) { std::fprintf(stderr, "serve: %s\n", scheduler.error().message()); return 1; }

  serve::Engine engine(**scheduler, static_cast<size_t>(options.parallel + options.max_queue));
  std::thread stepping([&engine] { engine.run(); });
  Service service(options, *tokenizer, serve::chat_template_of(**model), engine);
  httplib::Server server;
  // Every request in flight holds a thread while it waits; a few more answer /health, 429s and the
  // connections clients keep alive in between.
  const size_t http_threads = static_cast<size_t>(options.parallel + options.max_queue + 8);
  server.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  service.install(server);

  int port = options.port;
  if (port == 0) {
    port = server.bind_to_any_port(options.host);
  } else if (!server.bind_to_port(options.host, port)) {
    port = -1;
  }
  if (port <= 0) {
    std::fprintf(stderr, "serve: cannot listen on %s:%d\n", options.host.c_str(), options.port);
    engine.stop();
    stepping.join();
    return 1;
  }

  std::atomic<bool> signalled{false}, listening_done{false};
  std::thread signal_watcher([&] {
    const timespec tick{0, 100 * 1000 * 1000};
    int signal_number = -1;
    while (!listening_done.load()) {
      signal_number = sigtimedwait(&stop_signals, nullptr, &tick);
      if (signal_number > 0) break;
    }
    if (signal_number <= 0) return;
    signalled = true;
    std::fprintf(stderr, "serve: signal %d: finishing the requests in flight and stopping\n", signal_number);
    engine.stop_accepting();  // new requests get 503, requests in flight end now
    engine.wait_for_responses(std::chrono::seconds(10));
    server.stop();
  });

  if (options.api_key.empty() && options.host != "127.0.0.1" && options.host != "localhost" && options.host != "::1") {
    std::fprintf(stderr, "serve: warning: listening on %s without --api-key: anyone who can reach it can use it\n",
                 options.host.c_str());
  }
  std::printf("listening on http://%s:%d\n", url_host(options.host).c_str(), port);
  std::fflush(stdout);
  const bool listened = server.listen_after_bind();
  listening_done = true;
  signal_watcher.join();
  engine.stop();
  stepping.join();
  if (!signalled.load()) {
    std::fprintf(stderr, "serve: the server stopped unexpectedly\n");
    return listened ? 0 : 1;
  }
  std::fprintf(stderr, "serve: stopped\n");
  return 0;
}
