#!/usr/bin/env python3
"""Why this file exists: C#, GDExtension, Python and other bindings reach bora through libbora's C ABI
(include/bora/bora.h) with nothing but declared structs and function pointers. This test is such a
binding, written with ctypes: if a struct layout, a callback signature, an error path or an exported
symbol is wrong, it fails here the way it would fail in a game engine.

    python3 tests/c_api/test_c_api.py path/to/libbora.so tests/data
"""
import ctypes as C
import os
import shutil
import subprocess
import sys
import threading
import unittest

LIBRARY = None
DATA = None

# bora_status
OK, IO, FORMAT, UNSUPPORTED, MISSING, SHAPE, INVALID_ARGUMENT, CONTEXT_FULL, CANCELLED, OUT_OF_MEMORY, INTERNAL = range(11)
# bora_stop_reason
STOP_EOS, STOP_MAX_TOKENS, STOP_STRING, STOP_CALLBACK, STOP_CONTEXT_FULL, STOP_CANCELLED, STOP_ERROR = range(7)
# bora_sequence_state
QUEUED, PREFILLING, GENERATING, FINISHED = range(4)

PROGRESS = C.CFUNCTYPE(C.c_bool, C.c_float, C.c_void_p)
PARALLEL_TASK = C.CFUNCTYPE(None, C.c_void_p, C.c_int)
HOST_RUN = C.CFUNCTYPE(None, C.c_void_p, C.c_int, PARALLEL_TASK, C.c_void_p)
ABORT = C.CFUNCTYPE(C.c_bool, C.c_void_p)
PIECE = C.CFUNCTYPE(C.c_bool, C.POINTER(C.c_char), C.c_size_t, C.c_void_p)
SEQUENCE_PIECE = C.CFUNCTYPE(C.c_bool, C.c_uint64, C.POINTER(C.c_char), C.c_size_t, C.c_void_p)


class ModelParams(C.Structure):
    _fields_ = [("progress_callback", PROGRESS), ("progress_user_data", C.c_void_p),
                ("kv_cache_type", C.c_int32), ("use_mmap", C.c_bool)]


class ModelInfo(C.Structure):
    _fields_ = [("architecture", C.c_char_p), ("preset", C.c_char_p), ("n_vocab", C.c_int64),
                ("n_ctx_train", C.c_int64), ("n_embd", C.c_int64), ("n_layer", C.c_int64), ("n_head", C.c_int64),
                ("n_head_kv", C.c_int64), ("n_ff", C.c_int64), ("n_expert", C.c_int64), ("n_expert_used", C.c_int64),
                ("sliding_window", C.c_int64), ("weight_bytes_per_token", C.c_uint64), ("token_bos", C.c_int32),
                ("token_eos", C.c_int32), ("has_tokenizer", C.c_bool)]


class SampleParams(C.Structure):
    _fields_ = [("temperature", C.c_float), ("top_k", C.c_int32), ("top_p", C.c_float), ("min_p", C.c_float),
                ("repeat_penalty", C.c_float), ("repeat_last_n", C.c_int32), ("seed", C.c_uint64),
                ("max_tokens", C.c_int32), ("stop_strings", C.POINTER(C.c_char_p)), ("n_stop_strings", C.c_size_t)]


class SessionParams(C.Structure):
    _fields_ = [("n_ctx", C.c_int32), ("n_batch", C.c_int32), ("n_threads", C.c_int32),
                ("n_threads_batch", C.c_int32), ("sliding_window", C.c_int32), ("f32_activations", C.c_bool),
                ("abort_callback", ABORT), ("abort_user_data", C.c_void_p), ("host_run", HOST_RUN),
                ("host", C.c_void_p), ("host_n_threads", C.c_int32)]


class ChatMessage(C.Structure):
    _fields_ = [("role", C.c_char_p), ("content", C.c_char_p)]


class Result(C.Structure):
    _fields_ = [("text", C.POINTER(C.c_char)), ("text_length", C.c_size_t), ("n_prompt_tokens", C.c_int64),
                ("n_generated", C.c_int64), ("stop_reason", C.c_int32)]


class Step(C.Structure):
    _fields_ = [("text", C.POINTER(C.c_char)), ("text_length", C.c_size_t), ("token", C.c_int32),
                ("done", C.c_bool), ("stop_reason", C.c_int32)]


class SchedulerParams(C.Structure):
    _fields_ = [("n_batch", C.c_int32), ("n_threads", C.c_int32), ("n_threads_batch", C.c_int32),
                ("prefill_chunk", C.c_int32), ("max_sequences", C.c_int32), ("f32_activations", C.c_bool),
                ("abort_callback", ABORT), ("abort_user_data", C.c_void_p), ("host_run", HOST_RUN),
                ("host", C.c_void_p), ("host_n_threads", C.c_int32)]


class RequestParams(C.Structure):
    _fields_ = [("prompt", C.c_char_p), ("tokens", C.POINTER(C.c_int32)), ("n_tokens", C.c_size_t),
                ("sample", SampleParams), ("n_ctx", C.c_int32), ("keep", C.c_bool), ("starts_text", C.c_bool),
                ("on_piece", SEQUENCE_PIECE), ("user_data", C.c_void_p)]


class SequenceStatus(C.Structure):
    _fields_ = [("state", C.c_int32), ("stop_reason", C.c_int32), ("error", C.c_int32),
                ("error_message", C.c_char_p), ("n_prompt_tokens", C.c_int64), ("n_generated", C.c_int64)]


def bind(lib):
    """Declares every function as a binding generator would from bora.h."""
    P = C.c_void_p
    signatures = {
        "bora_version": (C.c_char_p, []),
        "bora_last_error_code": (C.c_int, []),
        "bora_last_error_message": (C.c_char_p, []),
        "bora_status_name": (C.c_char_p, [C.c_int]),
        "bora_model_default_params": (ModelParams, []),
        "bora_model_load": (P, [C.c_char_p, C.POINTER(ModelParams)]),
        "bora_model_free": (None, [P]),
        "bora_model_get_info": (C.c_int, [P, C.POINTER(ModelInfo)]),
        "bora_sample_default_params": (SampleParams, []),
        "bora_session_default_params": (SessionParams, []),
        "bora_session_create": (P, [P, C.POINTER(SessionParams)]),
        "bora_session_free": (None, [P]),
        "bora_session_reset": (C.c_int, [P]),
        "bora_session_n_past": (C.c_int64, [P]),
        "bora_session_save": (C.c_int, [P, C.c_char_p]),
        "bora_session_load": (C.c_int, [P, C.c_char_p]),
        "bora_session_complete": (C.c_int, [P, C.c_char_p, C.POINTER(SampleParams), PIECE, P, C.POINTER(Result)]),
        "bora_session_chat": (C.c_int, [P, C.POINTER(ChatMessage), C.c_size_t, C.POINTER(SampleParams), PIECE, P,
                                        C.POINTER(Result)]),
        "bora_session_begin_completion": (C.c_int, [P, C.c_char_p, C.POINTER(SampleParams)]),
        "bora_session_begin_chat": (C.c_int, [P, C.POINTER(ChatMessage), C.c_size_t, C.POINTER(SampleParams)]),
        "bora_session_step": (C.c_int, [P, C.POINTER(Step)]),
        "bora_scheduler_default_params": (SchedulerParams, []),
        "bora_request_default_params": (RequestParams, []),
        "bora_scheduler_create": (P, [P, C.POINTER(SchedulerParams)]),
        "bora_scheduler_free": (None, [P]),
        "bora_scheduler_submit": (C.c_int, [P, C.POINTER(RequestParams), C.POINTER(C.c_uint64)]),
        "bora_scheduler_fork": (C.c_int, [P, C.c_uint64, C.POINTER(RequestParams), C.POINTER(C.c_uint64)]),
        "bora_scheduler_step": (C.c_int, [P]),
        "bora_scheduler_idle": (C.c_bool, [P]),
        "bora_scheduler_status": (C.c_int, [P, C.c_uint64, C.POINTER(SequenceStatus)]),
        "bora_scheduler_take_text": (C.POINTER(C.c_char), [P, C.c_uint64, C.POINTER(C.c_size_t)]),
        "bora_scheduler_cancel": (C.c_int, [P, C.c_uint64]),
        "bora_scheduler_release": (C.c_int, [P, C.c_uint64]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return sorted(signatures)


def data(relative):
    return os.path.join(DATA, relative).encode()


def demo_path():
    return data("demo-mistral/demo-mistral-Q4_0.gguf")


class Collector:
    """A piece callback that keeps what it is given (and may refuse after `limit` pieces)."""

    def __init__(self, limit=None):
        self.pieces = []
        self.limit = limit
        self.callback = PIECE(self._on_piece)

    def _on_piece(self, piece, length, _user_data):
        self.pieces.append(C.string_at(piece, length).decode("utf-8"))
        return self.limit is None or len(self.pieces) < self.limit

    @property
    def text(self):
        return "".join(self.pieces)


def greedy(max_tokens):
    sample = lib.bora_sample_default_params()
    sample.temperature = 0.0
    sample.max_tokens = max_tokens
    return sample


def sampled(seed, max_tokens):
    sample = lib.bora_sample_default_params()
    sample.temperature = 0.9
    sample.seed = seed
    sample.max_tokens = max_tokens
    return sample


lib = None
demo = None


def setUpModule():
    global lib, demo
    lib = C.CDLL(LIBRARY)
    bind(lib)
    demo = lib.bora_model_load(demo_path(), None)
    assert demo, lib.bora_last_error_message()


def tearDownModule():
    lib.bora_model_free(demo)


class Errors(unittest.TestCase):
    def last_error(self):
        return lib.bora_last_error_code(), lib.bora_last_error_message().decode()

    def test_version(self):
        self.assertEqual(lib.bora_version(), b"0.1.0")
        self.assertEqual(lib.bora_status_name(OK), b"ok")
        self.assertEqual(lib.bora_status_name(CONTEXT_FULL), b"context full")

    def test_a_missing_file_is_an_error_naming_it(self):
        path = data("no/such/model.gguf")
        self.assertFalse(lib.bora_model_load(path, None))
        code, message = self.last_error()
        self.assertNotEqual(code, OK)
        self.assertIn("model.gguf", message)
        self.assertFalse(lib.bora_model_load(None, None))
        self.assertEqual(self.last_error()[0], INVALID_ARGUMENT)

    def test_bad_params_are_refused_with_a_reason(self):
        params = lib.bora_model_default_params()
        params.kv_cache_type = 7
        self.assertFalse(lib.bora_model_load(demo_path(), C.byref(params)))
        self.assertEqual(self.last_error()[0], INVALID_ARGUMENT)
        session_params = lib.bora_session_default_params()
        session_params.n_threads = 0
        self.assertFalse(lib.bora_session_create(demo, C.byref(session_params)))
        self.assertEqual(self.last_error()[0], INVALID_ARGUMENT)
        self.assertFalse(lib.bora_session_create(None, None))
        scheduler_params = lib.bora_scheduler_default_params()
        scheduler_params.prefill_chunk = 0
        self.assertFalse(lib.bora_scheduler_create(demo, C.byref(scheduler_params)))
        code, message = self.last_error()
        self.assertEqual(code, INVALID_ARGUMENT)
        self.assertIn("prefill_chunk", message)
        session = lib.bora_session_create(demo, None)
        self.assertTrue(session)
        try:
            self.assertEqual(lib.bora_session_complete(session, None, None, PIECE(), None, None), INVALID_ARGUMENT)
            sample = greedy(4)
            sample.n_stop_strings = 2  # and no array
            self.assertEqual(lib.bora_session_complete(session, b"Hi", C.byref(sample), PIECE(), None, None),
                             INVALID_ARGUMENT)
            step = Step()
            self.assertEqual(lib.bora_session_step(session, C.byref(step)), INVALID_ARGUMENT)  # nothing begun
            self.assertIn("begin", self.last_error()[1])
        finally:
            lib.bora_session_free(session)

    def test_the_last_error_belongs_to_its_thread(self):
        self.assertFalse(lib.bora_model_load(None, None))
        seen = []

        def other():
            seen.append(lib.bora_last_error_code())
            lib.bora_model_load(data("missing.gguf"), None)
            seen.append(lib.bora_last_error_message())

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        self.assertEqual(seen[0], OK)
        self.assertIn(b"missing.gguf", seen[1])
        self.assertEqual(self.last_error()[0], INVALID_ARGUMENT)

    def test_only_bora_symbols_are_exported(self):
        nm = shutil.which("nm")
        if nm is None:
            self.skipTest("no nm")
        out = subprocess.run([nm, "-D", "--defined-only", LIBRARY], check=True, capture_output=True, text=True).stdout
        names = [line.split()[-1] for line in out.splitlines() if line.strip()]
        self.assertTrue(names)
        self.assertEqual([n for n in names if not n.startswith("bora_")], [])
        self.assertEqual(sorted(names), bind(lib))


class Loading(unittest.TestCase):
    def test_progress_is_reported_and_can_cancel(self):
        seen = []

        def on_progress(progress, _user_data):
            seen.append(progress)
            return True

        params = lib.bora_model_default_params()
        params.progress_callback = PROGRESS(on_progress)
        model = lib.bora_model_load(demo_path(), C.byref(params))
        self.assertTrue(model)
        lib.bora_model_free(model)
        self.assertTrue(seen)
        self.assertEqual(seen, sorted(seen))
        self.assertAlmostEqual(seen[-1], 1.0)

        params.progress_callback = PROGRESS(lambda progress, _: progress < 0.5)
        self.assertFalse(lib.bora_model_load(demo_path(), C.byref(params)))
        self.assertEqual(lib.bora_last_error_code(), CANCELLED)

    def test_model_info(self):
        info = ModelInfo()
        self.assertEqual(lib.bora_model_get_info(demo, C.byref(info)), OK)
        self.assertEqual(info.n_vocab, 32000)
        self.assertEqual(info.preset, b"mistral")
        self.assertTrue(info.has_tokenizer)
        self.assertEqual((info.token_bos, info.token_eos), (1, 2))
        self.assertGreater(info.n_layer, 0)
        self.assertGreater(info.weight_bytes_per_token, 0)
        self.assertEqual(info.n_expert, 0)
        self.assertEqual(lib.bora_model_get_info(None, C.byref(info)), INVALID_ARGUMENT)

    def test_other_formats_and_a_mixture_of_experts_load(self):
        for path, preset in [("tiny-mistral/tiny-mistral-Q8_0.gguf", b"mistral"),
                             ("tiny-mixtral/tiny-mixtral-Q8_0.gguf", b"mixtral")]:
            if not os.path.exists(data(path)):
                continue
            model = lib.bora_model_load(data(path), None)
            self.assertTrue(model, lib.bora_last_error_message())
            info = ModelInfo()
            self.assertEqual(lib.bora_model_get_info(model, C.byref(info)), OK)
            self.assertEqual(info.preset, preset)
            if not info.has_tokenizer:  # text in and out is then refused with a reason
                session = lib.bora_session_create(model, None)
                self.assertEqual(lib.bora_session_complete(session, b"Hi", None, PIECE(), None, None), MISSING)
                lib.bora_session_free(session)
            lib.bora_model_free(model)


class Sessions(unittest.TestCase):
    def setUp(self):
        self.session = lib.bora_session_create(demo, None)
        self.assertTrue(self.session)

    def tearDown(self):
        lib.bora_session_free(self.session)

    def complete(self, session, prompt, sample, collector=None):
        collector = collector or Collector()
        result = Result()
        status = lib.bora_session_complete(session, prompt, C.byref(sample), collector.callback, None, C.byref(result))
        self.assertEqual(status, OK, lib.bora_last_error_message())
        return result, collector

    def test_completion_streams_pieces_that_make_the_text(self):
        result, collector = self.complete(self.session, b"The best way to", greedy(16))
        self.assertEqual(result.n_generated, 16)
        self.assertEqual(result.stop_reason, STOP_MAX_TOKENS)
        self.assertGreater(result.n_prompt_tokens, 1)
        self.assertEqual(collector.text.encode(), C.string_at(result.text, result.text_length))
        self.assertEqual(lib.bora_session_n_past(self.session), result.n_prompt_tokens + 16)
        other = lib.bora_session_create(demo, None)
        again, _ = self.complete(other, b"The best way to", greedy(16))
        self.assertEqual(C.string_at(again.text, again.text_length), collector.text.encode())
        lib.bora_session_free(other)

    def test_a_q8_0_kv_cache_loads_and_completes(self):
        params = lib.bora_model_default_params()
        params.kv_cache_type = 2  # BORA_KV_CACHE_Q8_0
        model = lib.bora_model_load(demo_path(), C.byref(params))
        self.assertTrue(model, lib.bora_last_error_message())
        session = lib.bora_session_create(model, None)
        try:
            result, collector = self.complete(session, b"The best way to", greedy(8))
            self.assertEqual(result.n_generated, 8)
            self.assertGreater(len(collector.text), 0)
        finally:
            lib.bora_session_free(session)
            lib.bora_model_free(model)

    def test_a_callback_that_returns_false_stops(self):
        result, collector = self.complete(self.session, b"The best way to", greedy(32), Collector(limit=3))
        self.assertEqual(len(collector.pieces), 3)
        self.assertEqual(result.stop_reason, STOP_CALLBACK)

    def test_stop_strings(self):
        sample = greedy(32)
        stop = (C.c_char_p * 1)(b"Wall")
        sample.stop_strings = stop
        sample.n_stop_strings = 1
        result, _ = self.complete(self.session, b"A fool", sample)
        self.assertEqual(result.stop_reason, STOP_STRING)
        self.assertNotIn(b"Wall", C.string_at(result.text, result.text_length))

    def test_steps_give_the_completion_of_the_same_seed(self):
        whole, _ = self.complete(self.session, b"Computers are", sampled(7, 20))
        expected = C.string_at(whole.text, whole.text_length)
        stepped_session = lib.bora_session_create(demo, None)
        sample = sampled(7, 20)
        self.assertEqual(lib.bora_session_begin_completion(stepped_session, b"Computers are", C.byref(sample)), OK)
        text, steps, step = b"", 0, Step()
        while True:
            self.assertEqual(lib.bora_session_step(stepped_session, C.byref(step)), OK)
            text += C.string_at(step.text, step.text_length)
            steps += 1
            if step.done:
                break
        self.assertEqual(text, expected)
        self.assertEqual(step.stop_reason, whole.stop_reason)
        self.assertLessEqual(steps, 20)
        self.assertEqual(lib.bora_session_step(stepped_session, C.byref(step)), OK)  # done again
        self.assertTrue(step.done)
        self.assertEqual(step.text_length, 0)
        lib.bora_session_free(stepped_session)

    def test_chat_and_chat_steps(self):
        messages = (ChatMessage * 1)(ChatMessage(b"user", b"Tell me a fortune."))
        sample = sampled(3, 12)
        collector = Collector()
        result = Result()
        self.assertEqual(lib.bora_session_chat(self.session, messages, 1, C.byref(sample), collector.callback, None,
                                               C.byref(result)), OK)
        self.assertEqual(collector.text.encode(), C.string_at(result.text, result.text_length))
        stepped = lib.bora_session_create(demo, None)
        self.assertEqual(lib.bora_session_begin_chat(stepped, messages, 1, C.byref(sample)), OK)
        text, step = b"", Step()
        while not step.done:
            self.assertEqual(lib.bora_session_step(stepped, C.byref(step)), OK)
            text += C.string_at(step.text, step.text_length)
        self.assertEqual(text, collector.text.encode())
        bad = (ChatMessage * 1)(ChatMessage(b"user", None))
        self.assertEqual(lib.bora_session_begin_chat(stepped, bad, 1, None), INVALID_ARGUMENT)
        lib.bora_session_free(stepped)

    def test_an_abort_callback_cancels_a_prompt(self):
        calls = []

        def abort(_user_data):
            calls.append(1)
            return True

        params = lib.bora_session_default_params()
        params.abort_callback = ABORT(abort)
        session = lib.bora_session_create(demo, C.byref(params))
        status = lib.bora_session_complete(session, b"Once upon a time, in a village by the sea, there lived",
                                           None, PIECE(), None, None)
        self.assertEqual(status, CANCELLED)
        self.assertIn(b"abort", lib.bora_last_error_message())
        self.assertTrue(calls)
        lib.bora_session_free(session)

    def test_save_and_load(self):
        self.complete(self.session, b"Hello there", greedy(4))
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "bora-c-api-%d.session" % os.getpid()).encode()
        try:
            self.assertEqual(lib.bora_session_save(self.session, path), OK)
            other = lib.bora_session_create(demo, None)
            self.assertEqual(lib.bora_session_load(other, path), OK)
            self.assertEqual(lib.bora_session_n_past(other), lib.bora_session_n_past(self.session))
            lib.bora_session_free(other)
        finally:
            os.unlink(path)
        self.assertEqual(lib.bora_session_load(self.session, b"/no/such/file"), IO)
        self.assertEqual(lib.bora_session_reset(self.session), OK)
        self.assertEqual(lib.bora_session_n_past(self.session), 0)


class Scheduler(unittest.TestCase):
    def setUp(self):
        params = lib.bora_scheduler_default_params()
        params.n_batch = 64
        params.prefill_chunk = 8
        self.scheduler = lib.bora_scheduler_create(demo, C.byref(params))
        self.assertTrue(self.scheduler, lib.bora_last_error_message())
        self.keep_alive = []

    def tearDown(self):
        lib.bora_scheduler_free(self.scheduler)

    def request(self, prompt, seed, max_tokens, keep=False, on_piece=None):
        request = lib.bora_request_default_params()
        request.prompt = prompt
        request.sample = sampled(seed, max_tokens)
        request.keep = keep
        if on_piece is not None:
            request.on_piece = on_piece
            self.keep_alive.append(on_piece)
        return request

    def submit(self, request):
        sequence = C.c_uint64()
        self.assertEqual(lib.bora_scheduler_submit(self.scheduler, C.byref(request), C.byref(sequence)), OK,
                         lib.bora_last_error_message())
        return sequence.value

    def status(self, sequence):
        status = SequenceStatus()
        self.assertEqual(lib.bora_scheduler_status(self.scheduler, sequence, C.byref(status)), OK)
        return status

    def take(self, sequence):
        length = C.c_size_t()
        text = lib.bora_scheduler_take_text(self.scheduler, sequence, C.byref(length))
        return C.string_at(text, length.value)

    def run_all(self, limit=2000):
        for _ in range(limit):
            if lib.bora_scheduler_idle(self.scheduler):
                return
            self.assertEqual(lib.bora_scheduler_step(self.scheduler), OK, lib.bora_last_error_message())
        self.fail("the scheduler never became idle")

    def test_sequences_poll_call_back_cancel_and_release(self):
        streamed = {}

        def on_piece(sequence, piece, length, _user_data):
            streamed[sequence] = streamed.get(sequence, b"") + C.string_at(piece, length)
            return True

        callback = SEQUENCE_PIECE(on_piece)
        ids = [self.submit(self.request(p, seed, 12, on_piece=callback))
               for seed, p in enumerate([b"The blacksmith says:", b"The guard says:", b"Tom"])]
        polled = {i: b"" for i in ids}
        cancelled = ids[2]
        for step in range(4):
            self.assertEqual(lib.bora_scheduler_step(self.scheduler), OK)
            for i in ids:
                polled[i] += self.take(i)
        self.assertEqual(lib.bora_scheduler_cancel(self.scheduler, cancelled), OK)
        self.assertEqual(lib.bora_scheduler_release(self.scheduler, ids[0]), INVALID_ARGUMENT)  # still running
        self.run_all()
        for i in ids:
            polled[i] += self.take(i)
            self.assertEqual(polled[i], streamed.get(i, b""))
            status = self.status(i)
            self.assertEqual(status.state, FINISHED)
            self.assertGreater(status.n_prompt_tokens, 0)
        self.assertEqual(self.status(cancelled).stop_reason, STOP_CANCELLED)
        for i in ids[:2]:
            self.assertIn(self.status(i).stop_reason, (STOP_MAX_TOKENS, STOP_EOS))
            self.assertTrue(polled[i])
            self.assertEqual(lib.bora_scheduler_release(self.scheduler, i), OK)
        status = SequenceStatus()
        self.assertEqual(lib.bora_scheduler_status(self.scheduler, ids[0], C.byref(status)), INVALID_ARGUMENT)
        self.assertEqual(self.take(ids[0]), b"")

    def test_a_sequence_gets_the_same_text_alone_or_in_a_crowd(self):
        alone = self.submit(self.request(b"She opened the old book", 5, 10))
        self.run_all()
        expected = self.take(alone)
        crowd = [self.submit(self.request(b"Hello", seed, 10)) for seed in range(3)]
        again = self.submit(self.request(b"She opened the old book", 5, 10))
        crowd.append(self.submit(self.request(b"Three ships sailed into the harbour at dawn", 9, 10)))
        self.run_all()
        self.assertEqual(self.take(again), expected)

    def test_forks_continue_a_kept_prefix(self):
        prefix_request = self.request(b"The innkeeper tells a story:", 1, 0, keep=True)
        prefix_request.n_ctx = 64  # room for what the forks add
        prefix = self.submit(prefix_request)
        self.run_all()
        self.assertEqual(self.status(prefix).state, FINISHED)
        forks = []
        for seed in (11, 12):
            request = self.request(b" Once", seed, 8)
            sequence = C.c_uint64()
            self.assertEqual(lib.bora_scheduler_fork(self.scheduler, prefix, C.byref(request), C.byref(sequence)), OK,
                             lib.bora_last_error_message())
            forks.append(sequence.value)
        self.run_all()
        texts = [self.take(f) for f in forks]
        self.assertTrue(all(texts))
        sequence = C.c_uint64()
        request = self.request(b" x", 1, 1)
        self.assertEqual(lib.bora_scheduler_fork(self.scheduler, 999, C.byref(request), C.byref(sequence)),
                         INVALID_ARGUMENT)
        self.assertEqual(lib.bora_scheduler_release(self.scheduler, prefix), OK)

    def test_a_host_job_system_runs_the_loops_with_the_same_text(self):
        alone = self.submit(self.request(b"The guard says:", 4, 10))
        self.run_all()
        expected = self.take(alone)
        parts_run = []

        def host_run(_host, parts, task, job):  # a job system that happens to run the parts in order
            for part in range(parts):
                task(job, part)
            parts_run.append(parts)

        callback = HOST_RUN(host_run)
        params = lib.bora_scheduler_default_params()
        params.n_batch, params.prefill_chunk, params.n_threads = 64, 8, 2
        params.host_run, params.host_n_threads = callback, 2
        hosted = lib.bora_scheduler_create(demo, C.byref(params))
        self.assertTrue(hosted, lib.bora_last_error_message())
        request = self.request(b"The guard says:", 4, 10)
        sequence = C.c_uint64()
        self.assertEqual(lib.bora_scheduler_submit(hosted, C.byref(request), C.byref(sequence)), OK)
        while not lib.bora_scheduler_idle(hosted):
            self.assertEqual(lib.bora_scheduler_step(hosted), OK)
        length = C.c_size_t()
        text = lib.bora_scheduler_take_text(hosted, sequence.value, C.byref(length))
        self.assertEqual(C.string_at(text, length.value), expected)
        self.assertTrue(parts_run)
        self.assertEqual(max(parts_run), 2)
        lib.bora_scheduler_free(hosted)
        params.host_n_threads = 0
        self.assertFalse(lib.bora_scheduler_create(demo, C.byref(params)))
        self.assertEqual(lib.bora_last_error_code(), INVALID_ARGUMENT)

    def test_a_sequence_that_cannot_run_finishes_alone_with_its_error(self):
        small = self.request(b"It was the coldest winter anyone could remember", 1, 4)
        small.n_ctx = 3
        failing = self.submit(small)
        fine = self.submit(self.request(b"Hello", 1, 4))
        self.run_all()
        status = self.status(failing)
        self.assertEqual(status.stop_reason, STOP_ERROR)
        self.assertEqual(status.error, CONTEXT_FULL)
        self.assertIn(b"n_ctx", status.error_message)
        self.assertEqual(self.status(fine).error, OK)
        self.assertEqual(self.status(fine).error_message, b"")
        request = lib.bora_request_default_params()  # no prompt at all
        sequence = C.c_uint64()
        self.assertEqual(lib.bora_scheduler_submit(self.scheduler, C.byref(request), C.byref(sequence)),
                         INVALID_ARGUMENT)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: test_c_api.py LIBBORA DATA_DIR [unittest options]")
    LIBRARY, DATA = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:], verbosity=2)
