// Why this file exists: the one header users include. Define BORA_IMPLEMENTATION in exactly one
// .cpp before including it, so the SIMD kernels for every target are compiled once.
#ifndef BORA_BORA_HPP
#define BORA_BORA_HPP

#define BORA_VERSION_MAJOR 0
#define BORA_VERSION_MINOR 1
#define BORA_VERSION_PATCH 0

#include "bora/base/expected.hpp"
#include "bora/base/mapped_file.hpp"
#include "bora/base/page_aligned.hpp"
#include "bora/base/random.hpp"
#include "bora/base/thread_pool.hpp"
#include "bora/io/gguf.hpp"
#include "bora/io/gguf_writer.hpp"
#include "bora/io/gguf_value.hpp"
#include "bora/io/json_config.hpp"
#include "bora/io/model_config.hpp"
#include "bora/io/model_files.hpp"
#include "bora/io/ollama.hpp"
#include "bora/io/safetensors.hpp"
#include "bora/io/sentencepiece_model.hpp"
#include "bora/io/vocabulary.hpp"
#include "bora/model/fingerprint.hpp"
#include "bora/model/load.hpp"
#include "bora/model/presets.hpp"
#include "bora/model/transformer.hpp"
#include "bora/ops/ops.hpp"
#include "bora/quant/dequantize.hpp"
#include "bora/text/chat_request.hpp"
#include "bora/text/chat_template.hpp"
#include "bora/text/gbnf.hpp"
#include "bora/text/grammar.hpp"
#include "bora/text/grammar_constraint.hpp"
#include "bora/text/json_schema.hpp"
#include "bora/text/language_model.hpp"
#include "bora/text/model_tokenizer.hpp"
#include "bora/text/sampler.hpp"
#include "bora/text/scheduler.hpp"
#include "bora/text/session.hpp"
#include "bora/text/tokenizer.hpp"
#include "bora/text/tool_call_constraint.hpp"
#include "bora/text/tool_calls.hpp"

#endif  // BORA_BORA_HPP

// Outside the guard on purpose: the implementation may be requested after a plain include.
#if defined(BORA_IMPLEMENTATION) && !defined(BORA_IMPLEMENTATION_INCLUDED)
#define BORA_IMPLEMENTATION_INCLUDED
#include "bora/ops/implementation.hpp"
#endif
