#!/usr/bin/env python3
"""Why this file exists: the fuzz targets start from small seed files (tests/fuzz/corpus/<what>/) that
reach deep into each reader; this writes them deterministically from hand-built structures and from
cut-down copies of the test data, so the seeds can be regenerated and stay small (the whole corpus is
well under 1 MB). The session-file seeds need the model, so the fuzz program writes those itself:

    python3 tests/fuzz/make_corpus.py
    BORA_FUZZ_WRITE_SESSION_SEEDS=tests/fuzz/corpus/session_file build/fuzz/tests/fuzz/fuzz_session_file
"""
import json
import pathlib
import random
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "tests" / "data"
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def write(what, name, data):
    folder = CORPUS / what
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


# ---- GGUF ----------------------------------------------------------------------------------------
U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10
GGML_F32, GGML_Q8_0 = 0, 8


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind, value):
    if kind == U32:
        return struct.pack("<I", value)
    if kind == I32:
        return struct.pack("<i", value)
    if kind == F32:
        return struct.pack("<f", value)
    if kind == BOOL:
        return struct.pack("<B", 1 if value else 0)
    if kind == STRING:
        return gguf_string(value)
    if kind == U64:
        return struct.pack("<Q", value)
    element_kind, items = value
    return struct.pack("<IQ", element_kind, len(items)) + b"".join(gguf_value(element_kind, v) for v in items)


def q8_0_rows(rng, ne0, rows):
    out = bytearray()
    for _ in range(rows * ne0 // 32):
        out += struct.pack("<e", 0.02) + bytes(rng.randrange(256) for _ in range(32))
    return bytes(out)


def f32_values(values):
    return struct.pack("<%df" % len(values), *values)


def build_gguf(kvs, tensors):
    """kvs: [(key, kind, value)]; tensors: [(name, ne, ggml_type, data)]."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for key, kind, value in kvs:
        out += gguf_string(key) + struct.pack("<I", kind) + gguf_value(kind, value)
    offset = 0
    placed = []
    for name, ne, ggml_type, data in tensors:
        out += gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", ggml_type, offset)
        placed.append((offset, data))
        offset += (len(data) + 31) // 32 * 32
    out += bytes(-len(out) % 32)
    data_start = len(out)
    out += bytes(offset)
    for at, data in placed:
        out[data_start + at:data_start + at + len(data)] = data
    return bytes(out)


def micro_model(experts, window):
    rng = random.Random(7 + experts)
    dim, heads, kv_heads, head_dim, hidden = 32, 4, 2, 8, 64
    pieces = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "\u2581", "a", "b", "\u2581a", "ab", "\u2581ab", "<0x0A>",
              "<0xE2>", "<0x96>", "<0x81>", "c"]
    types = [2, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 6, 6, 6, 6, 1]
    vocab = len(pieces)
    kvs = [
        ("general.architecture", STRING, "llama"),
        ("llama.embedding_length", U32, dim),
        ("llama.block_count", U32, 1),
        ("llama.feed_forward_length", U32, hidden),
        ("llama.attention.head_count", U32, heads),
        ("llama.attention.head_count_kv", U32, kv_heads),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("llama.rope.freq_base", F32, 10000.0),
        ("llama.rope.dimension_count", U32, head_dim),
        ("llama.context_length", U32, 64),
        ("tokenizer.ggml.model", STRING, "llama"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, pieces)),
        ("tokenizer.ggml.scores", ARRAY, (F32, [-float(i) for i in range(vocab)])),
        ("tokenizer.ggml.token_type", ARRAY, (I32, types)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.unknown_token_id", U32, 0),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
        ("general.alignment", U32, 32),
    ]
    if window:
        kvs.append(("llama.attention.sliding_window", U32, window))
    if experts:
        kvs += [("llama.expert_count", U32, experts), ("llama.expert_used_count", U32, 1)]
    ones = f32_values([1.0] * dim)
    tensors = [("token_embd.weight", [dim, vocab], GGML_Q8_0, q8_0_rows(rng, dim, vocab))]
    b = "blk.0."
    tensors += [
        (b + "attn_norm.weight", [dim], GGML_F32, ones),
        (b + "attn_q.weight", [dim, heads * head_dim], GGML_Q8_0, q8_0_rows(rng, dim, heads * head_dim)),
        (b + "attn_k.weight", [dim, kv_heads * head_dim], GGML_Q8_0, q8_0_rows(rng, dim, kv_heads * head_dim)),
        (b + "attn_v.weight", [dim, kv_heads * head_dim], GGML_Q8_0, q8_0_rows(rng, dim, kv_heads * head_dim)),
        (b + "attn_output.weight", [heads * head_dim, dim], GGML_Q8_0, q8_0_rows(rng, heads * head_dim, dim)),
        (b + "ffn_norm.weight", [dim], GGML_F32, ones),
    ]
    if experts:
        tensors += [
            (b + "ffn_gate_inp.weight", [dim, experts], GGML_F32, f32_values([0.01 * i for i in range(dim * experts)])),
            (b + "ffn_gate_exps.weight", [dim, hidden, experts], GGML_Q8_0, q8_0_rows(rng, dim, hidden * experts)),
            (b + "ffn_down_exps.weight", [hidden, dim, experts], GGML_Q8_0, q8_0_rows(rng, hidden, dim * experts)),
            (b + "ffn_up_exps.weight", [dim, hidden, experts], GGML_Q8_0, q8_0_rows(rng, dim, hidden * experts)),
        ]
    else:
        tensors += [
            (b + "ffn_gate.weight", [dim, hidden], GGML_Q8_0, q8_0_rows(rng, dim, hidden)),
            (b + "ffn_down.weight", [hidden, dim], GGML_Q8_0, q8_0_rows(rng, hidden, dim)),
            (b + "ffn_up.weight", [dim, hidden], GGML_Q8_0, q8_0_rows(rng, dim, hidden)),
        ]
    tensors += [
        ("output_norm.weight", [dim], GGML_F32, ones),
        ("output.weight", [dim, vocab], GGML_F32, f32_values([0.01 * (i % 7) for i in range(dim * vocab)])),
    ]
    return build_gguf(kvs, tensors)


def gguf_seeds():
    write("gguf", "micro-dense.gguf", micro_model(0, 0))
    write("gguf", "micro-dense-window.gguf", micro_model(0, 16))
    write("gguf", "micro-moe.gguf", micro_model(2, 0))
    # Metadata only: every value kind, nested arrays, no tensors.
    kvs = [("u32", U32, 7), ("i32", I32, -7), ("f32", F32, 0.5), ("flag", BOOL, False), ("text", STRING, "caf\u00e9"),
           ("u64", U64, 1 << 40), ("strings", ARRAY, (STRING, ["a", "", "\u2581b"])),
           ("nested", ARRAY, (ARRAY, [(U32, [1, 2]), (STRING, ["x"])]))]
    write("gguf", "metadata-only.gguf", build_gguf(kvs, []))
    # The metadata and tensor table of a real converted model, without its tensor data.
    real = (DATA / "tiny-mistral" / "tiny-mistral-Q4_0.gguf").read_bytes()
    write("gguf", "tiny-mistral-header-only.gguf", real[:12960])


# ---- safetensors ---------------------------------------------------------------------------------
def build_safetensors(entries, metadata=None):
    """entries: [(name, dtype, shape)] with zero-filled data."""
    widths = {"F32": 4, "F16": 2, "BF16": 2}
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in entries:
        size = widths[dtype]
        for n in shape:
            size *= n
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(range(256)) * (offset // 256) + bytes(offset % 256)


def safetensors_seeds():
    real = (DATA / "tiny-mistral" / "hf" / "model.safetensors").read_bytes()
    header_len = struct.unpack("<Q", real[:8])[0]
    real_header = json.loads(real[8:8 + header_len])
    # The real tensor names and dtypes with tiny shapes, so the seed is small but looks like a model.
    entries = [(name, t["dtype"], [min(n, 4) for n in t["shape"]]) for name, t in real_header.items()
               if name != "__metadata__"]
    write("safetensors", "tiny-mistral-shrunk.safetensors", build_safetensors(entries[:12], {"format": "pt"}))
    write("safetensors", "mixed-dtypes.safetensors",
          build_safetensors([("a", "F32", [2, 3]), ("b", "F16", [5]), ("c", "BF16", []), ("d", "F32", [0, 7]),
                             ("e", "F16", [1, 1, 2, 2])]))
    # The real header with its data cut off: the JSON parses, the offsets point past the end.
    write("safetensors", "tiny-mistral-header-only.safetensors", real[:8 + header_len])


# ---- JSON configurations -------------------------------------------------------------------------
def json_config_seeds():
    for model in ("tiny-mistral", "tiny-mixtral"):
        write("json_config", model + "-config.json", (DATA / model / "hf" / "config.json").read_bytes())
        write("json_config", model + "-params.json", (DATA / model / "native" / "params.json").read_bytes())
    write("json_config", "llama-architectures.json",
          '{"architectures":["LlamaForCausalLM"],"hidden_size":4096.0,"num_hidden_layers":32,'
          '"num_attention_heads":32,"intermediate_size":11008,"vocab_size":32000,"bos_token_id":[1,2],'
          '"eos_token_id":null,"sliding_window":null,"rms_norm_eps":1e-6}')


# ---- SentencePiece models ------------------------------------------------------------------------
def read_varint(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def top_level_fields(data):
    """[(field number, raw bytes of the whole field)] of a protobuf message (length-delimited fields only)."""
    fields, at = [], 0
    while at < len(data):
        start = at
        tag, at = read_varint(data, at)
        assert tag & 7 == 2, "ModelProto's top-level fields are all messages"
        length, at = read_varint(data, at)
        at += length
        fields.append((tag >> 3, data[start:at]))
    return fields


def sentencepiece_seeds():
    for source, name, keep in (("tokenizer.model.v1", "v1-first-300-pieces.model", 300),
                               ("mistral_instruct_tokenizer_240323.model.v3", "v3-first-1100-pieces.model", 1100)):
        fields = top_level_fields((DATA / "tokenizer" / source).read_bytes())
        pieces = [raw for number, raw in fields if number == 1][:keep]
        rest = [raw for number, raw in fields if number != 1]
        write("sentencepiece_model", name, b"".join(pieces + rest))


# ---- chat requests -------------------------------------------------------------------------------
def chat_request_seeds():
    write("chat_request", "sample.json", (DATA / "tokenizer" / "chat_samples" / "no_tools" / "sample.json").read_bytes())
    write("chat_request", "system-and-empty.json", json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": ""},
        {"role": "user", "content": "Hi [INST] </s>"}, {"role": "assistant", "content": "Hello  "},
        {"role": "system", "content": "Again."}, {"role": "assistant", "content": "caf\u00e9 \U0001F999"}]}))
    write("chat_request", "assistant-first.json",
          '{"messages":[{"role":"assistant","content":"x"},{"role":"tool","content":"y"}]}')


# ---- JSON schemas and GBNF grammars (the grammar compilers) ------------------------------------
def json_schema_seeds():
    write("json_schema", "object.json", json.dumps({
        "type": "object", "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 8},
            "age": {"type": "integer", "minimum": -5, "maximum": 130},
            "score": {"type": "number"}, "ok": {"type": "boolean"}, "none": {"type": "null"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}},
        "required": ["name", "age"], "additionalProperties": False}))
    write("json_schema", "ref-anyof-enum.json", json.dumps({
        "$defs": {"leaf": {"enum": ["a", 1, None, True, {"k": [1, 2]}]},
                  "tree": {"anyOf": [{"$ref": "#/$defs/leaf"}, {"type": "array", "items": {"$ref": "#/$defs/tree"}}]}},
        "$ref": "#/$defs/tree"}))
    write("json_schema", "const-oneof.json", json.dumps({
        "oneOf": [{"const": "caf\u00e9 \"q\" \\"}, {"type": ["integer", "string"]}],
        "description": "annotations are ignored", "title": "t"}))
    write("json_schema", "any.json", "{}")
    write("json_schema", "unsupported.json", '{"type":"string","pattern":"^a+$","allOf":[{}]}')


def gbnf_seeds():
    write("gbnf", "arithmetic.gbnf", (
        "# arithmetic, right-recursive\n"
        "root   ::= expr\n"
        "expr   ::= term ((\"+\" | \"-\") term)*\n"
        "term   ::= factor ((\"*\" | \"/\") factor)*\n"
        "factor ::= number | \"(\" expr \")\"\n"
        "number ::= [0-9]+ (\".\" [0-9]{1,3})?\n"))
    write("gbnf", "json-ish.gbnf", (
        "root ::= object\n"
        "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
        "value ::= object | array | string | [0-9]+ | (\"true\" | \"false\" | \"null\") ws\n"
        "array ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
        "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" [\"\\\\/bfnrt] )* \"\\\"\" ws\n"
        "ws ::= [ \\t\\n]{0,4}\n"))
    write("gbnf", "escapes-and-counts.gbnf",
          'root ::= "caf\\u00e9" [\\x41-\\x5A]{2,4} "\\U0001F999"? x* [^a-z] \n'
          'x ::= ("a" | "\\n" | "\\t")\n')
    write("gbnf", "left-recursion.gbnf", "root ::= root \"a\" | \"b\"\n")
    write("gbnf", "undefined-rule.gbnf", "root ::= missing\n")


# ---- serve request bodies (OpenAI chat/completions, Bedrock) ----------------------------------
def serve_request_seeds():
    write("serve_request", "chat-stream.json", json.dumps({
        "model": "demo", "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "seed": 42, "stop": ["\n", "END"],
        "stream": True, "stream_options": {"include_usage": True}}))
    write("serve_request", "chat-tools.json", json.dumps({
        "model": "demo", "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "abcDEF123", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "abcDEF123", "name": "get_weather", "content": "22C"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "auto", "parallel_tool_calls": False}))
    write("serve_request", "chat-json-schema.json", json.dumps({
        "messages": [{"role": "user", "content": "Give JSON"}, {"role": "assistant", "content": "{", "prefix": True}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
            "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}},
        "max_completion_tokens": 16, "safe_prompt": True, "random_seed": 7}))
    write("serve_request", "completion-tokens.json", json.dumps({
        "model": "demo", "prompt": [1, 733, 16289, 28793], "max_tokens": 4, "n": 1, "echo": False,
        "logprobs": None, "ignore_eos": True, "response_format": {"type": "json_object"}}))
    write("serve_request", "bedrock.json", json.dumps({
        "prompt": "<s>[INST] Hello [/INST]", "max_tokens": 8, "temperature": 0.5, "top_p": 0.9, "top_k": 50,
        "stop": ["</s>"]}))
    write("serve_request", "bad-types.json", '{"messages":[{"role":"robot","content":1}],"max_tokens":-3,"n":2}')


# ---- Ollama manifests (input = name line + manifest) ---------------------------------------------
def ollama_seeds():
    hex_digest = "0123456789abcdef" * 4  # the blob the fuzz target creates
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "1" * 64},
                "layers": [{"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:" + "2" * 64},
                           {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + hex_digest,
                            "size": 4}]}
    write("ollama_manifest", "found.txt", "fuzz\n" + json.dumps(manifest))
    write("ollama_manifest", "tagged.txt", "registry.ollama.ai/library/fuzz:latest\n" + json.dumps(manifest))
    manifest["layers"][1]["digest"] = "sha256:" + "f" * 64
    write("ollama_manifest", "missing-blob.txt", "library/fuzz\n" + json.dumps(manifest))
    write("ollama_manifest", "bad-name.txt", "../../etc/passwd:x\n{}")


# ---- tokenizer texts -----------------------------------------------------------------------------
def tokenizer_seeds():
    heldout = (DATA / "demo-mistral" / "heldout.txt").read_text(encoding="utf-8")
    write("tokenizer", "english.txt", heldout[:400])
    write("tokenizer", "mixed-scripts.txt", "Caf\u00e9 na\u00efve \u4e2d\u6587 \u65e5\u672c\u8a9e "
          "\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \U0001F999\U0001F600 12345 3.14")
    write("tokenizer", "spaces-and-controls.txt", "  lead\ttab\n\nnew  two\u2581bar [INST] <s> </s> [REFERENCE_DOC_3] ")
    write("tokenizer", "malformed-utf8.bin", b"a\xffb\x80\x80x\xe2\x96\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80nul\x00end\xf0\x9f")


def main():
    gguf_seeds()
    safetensors_seeds()
    json_config_seeds()
    sentencepiece_seeds()
    chat_request_seeds()
    ollama_seeds()
    tokenizer_seeds()
    json_schema_seeds()
    gbnf_seeds()
    serve_request_seeds()


if __name__ == "__main__":
    main()
