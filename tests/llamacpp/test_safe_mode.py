"""Safe mode's decision (hoshikage_llamacpp.lifecycle.safe_mode), from /proc/cpuinfo texts with and
without AMX and from remembered verdicts; the crashes themselves are real in
tests/reliability/test_model_process.py."""

from __future__ import annotations

import json

import pytest
from hoshikage_llamacpp.lifecycle.child import faults
from hoshikage_llamacpp.lifecycle.safe_mode import (
    CRASH,
    OK,
    Subject,
    cpu_facts,
    decide,
    remember,
    verdict,
)

SAPPHIRE_RAPIDS = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8488C
flags		: fpu vme sse sse2 avx f16c avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
processor	: 1
model name	: Intel(R) Xeon(R) Platinum 8488C
flags		: fpu vme sse sse2 avx f16c avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ZEN4 = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 9R14 96-Core Processor
flags		: fpu sse sse2 avx f16c avx2 fma avx512f avx512bw avx512_vnni avx512_bf16
"""


@pytest.fixture(autouse=True)
def verdicts(tmp_path, monkeypatch):
    path = tmp_path / "verdicts.json"
    monkeypatch.setenv("HOSHIKAGE_VERDICTS", str(path))
    return path


def subject(cpuinfo: str, types=("f32", "q4_K", "q6_K")) -> Subject:
    return Subject(build="llama-cpp-python 0.3.36 (test)", cpu=cpu_facts(cpuinfo), types=types)


def test_cpu_facts_read_the_model_and_the_flags_that_choose_kernels():
    amx, zen = cpu_facts(SAPPHIRE_RAPIDS), cpu_facts(ZEN4)
    assert amx.model == "Intel(R) Xeon(R) Platinum 8488C" and amx.amx
    assert {"avx2", "avx512f", "amx_int8", "amx_tile"} <= set(amx.flags)
    assert "sse" not in amx.flags  # only the flags that decide llama.cpp's kernels
    assert zen.model.startswith("AMD EPYC") and not zen.amx and "avx512f" in zen.flags
    assert cpu_facts("").model == "unknown" and cpu_facts("").flags == ()


def test_with_no_verdict_a_model_process_tries_the_extra_buffer_types():
    for cpuinfo in (SAPPHIRE_RAPIDS, ZEN4):
        decision = decide("auto", subject(cpuinfo), isolated=True)
        assert decision.extra and decision.may_fall_back and not decision.safe


def test_with_no_verdict_a_model_in_the_server_avoids_them_only_on_amx():
    assert not decide("auto", subject(SAPPHIRE_RAPIDS), isolated=False).extra
    assert decide("auto", subject(ZEN4), isolated=False).extra


def test_a_crash_verdict_means_safe_mode_everywhere_and_is_kept(verdicts):
    amx = subject(SAPPHIRE_RAPIDS)
    remember(amx, CRASH, "its llama.cpp process was killed by SIGSEGV warming up")
    for isolated in (True, False):
        decision = decide("auto", amx, isolated=isolated)
        assert not decision.extra and decision.safe and not decision.may_fall_back
        assert "SIGSEGV" in decision.why
    remember(amx, OK)  # a later success with them off says nothing about them
    assert verdict(amx)["verdict"] == CRASH
    (entry,) = json.loads(verdicts.read_text()).values()
    assert entry["cpu"] == "Intel(R) Xeon(R) Platinum 8488C" and "amx_int8" in entry["flags"]
    assert entry["types"] == ["f32", "q4_K", "q6_K"] and entry["time"]


def test_verdicts_are_per_build_cpu_and_weight_types():
    amx = subject(SAPPHIRE_RAPIDS)
    remember(amx, CRASH, "crashed")
    assert verdict(subject(SAPPHIRE_RAPIDS, types=("f32", "f16"))) is None
    assert verdict(subject(ZEN4)) is None
    other_build = Subject(build="llama-cpp-python 0.3.37", cpu=amx.cpu, types=amx.types)
    assert verdict(other_build) is None
    assert decide("auto", subject(ZEN4), isolated=True).extra


def test_an_ok_verdict_lets_a_model_in_the_server_use_them_even_on_amx():
    amx = subject(SAPPHIRE_RAPIDS)
    remember(amx, OK)
    assert decide("auto", amx, isolated=False).extra


def test_extra_buffers_set_by_the_user_wins_over_any_verdict():
    amx = subject(SAPPHIRE_RAPIDS)
    remember(amx, CRASH, "crashed")
    forced = decide(True, amx, isolated=True)
    assert forced.extra and not forced.may_fall_back  # forced: a crash is reported, not hidden
    assert not decide(False, subject(ZEN4), isolated=True).extra


def test_an_unreadable_verdict_file_is_no_verdict(verdicts):
    verdicts.write_text("{not json")
    assert verdict(subject(SAPPHIRE_RAPIDS)) is None
    remember(subject(SAPPHIRE_RAPIDS), CRASH, "crashed")  # and it is written over cleanly
    assert verdict(subject(SAPPHIRE_RAPIDS))["verdict"] == CRASH


def test_the_fault_hook_spec():
    """The test-only HOSHIKAGE_FAULT spec the model process reads (real signals)."""
    assert faults("m", extra=True, spec="") == {}
    assert faults("m", extra=False, spec="stream") == {"stream": 11}
    assert faults("m", extra=False, spec="m@decode:SIGABRT,other@load") == {"decode": 6}
    assert faults("m", extra=False, spec="m@warmup:SIGSEGV:extra") == {}
    assert faults("m", extra=True, spec="m@warmup:SIGSEGV:extra") == {"warmup": 11}
