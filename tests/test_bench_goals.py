"""bench.suite's goal verdicts: each goal of the serving issue judged from the run's own figures."""

from bench.suite import goals, speedup_goals


def _run(fp32_b1: float, int8_b1: float | None, torch_b1: float, default: str | None = "fp32") -> dict:
    row = {"model": "m", "gflop_per_image": 1.0, "fp32_b1_ms": fp32_b1, "torch_b1_ms": torch_b1,
           "speedup_fp32_b1": torch_b1 / fp32_b1, "torch_b1_gflops": 1e3 / torch_b1, "default": default}
    if int8_b1 is not None:
        row |= {"int8_b1_ms": int8_b1, "speedup_int8_b1": torch_b1 / int8_b1}
    return {"models": [row], "core_gflops": {"ort": 60.0, "torch": 70.0},
            "roundtrips": {"rest_predict_digit": {"model_and_preprocessing_ms": 2.0},
                           "rest_diagnose_xray": {"model_and_preprocessing_ms": 31.0},
                           "rest_cifar_resnet_fp32": {"model_and_preprocessing_ms": 19.0}},
            "concurrency": [{"clients": 16, "requests_per_s": 29.0, "errors": 0,
                             "endpoints": {"rest_predict_digit": {}}}],
            "server": {"first_answer_s": 1.5}}


def test_speedup_goal_judges_the_default_file_and_names_the_fp32_bound_when_fp32_falls_short():
    # torch at 40 GFLOP/s on a 70 GFLOP/s core: FP32 can be at most 1.75x faster, whatever ORT does
    (line,) = speedup_goals(_run(fp32_b1=15.0, int8_b1=8.0, torch_b1=25.0, default="int8"))
    assert "INT8 (served by default) 3.1× ✓" in line and "FP32 (opt-in) 1.7×" in line and "1.7× ✗" not in line
    assert "70 / 40 GFLOP/s = 1.8×, below the goal" in line
    (line,) = speedup_goals(_run(fp32_b1=15.0, int8_b1=8.0, torch_b1=25.0, default="fp32"))
    assert "FP32 (served by default) 1.7× ✗" in line and "INT8 (opt-in) 3.1×" in line


def test_speedup_goal_met_has_no_bound_and_opt_in_rows_are_not_judged():
    (line,) = speedup_goals(_run(fp32_b1=5.0, int8_b1=None, torch_b1=20.0))
    assert line == "- `m`: FP32 (served by default) 4.0× ✓"
    (line,) = speedup_goals(_run(fp32_b1=10.0, int8_b1=None, torch_b1=20.0, default=None))
    assert "opt-in variant, not judged: FP32 2.0×" in line and "✗" not in line


def test_goals_judge_each_threshold():
    text = goals(_run(fp32_b1=5.0, int8_b1=None, torch_b1=20.0))
    assert "`rest_predict_digit` 2.0 ms ✓" in text and "`rest_diagnose_xray` 31.0 ms ✗" in text
    assert "opt-in variants over REST, not judged: `rest_cifar_resnet_fp32` 19.0 ms" in text
    assert "29.0 req/s, 0 errors ✗" in text
    assert "first answer (goal < 5 s): 1.5 s ✓" in text
