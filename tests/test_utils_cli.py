import pytest

from utils import cli
from utils.errors import BackendError, TutorialError


def test_common_flags_have_defaults_in_help():
    parser = cli.make_parser("demo", epochs=7, batch_size=3, seed=5)
    args = parser.parse_args([])
    assert (args.epochs, args.batch_size, args.seed, args.quiet) == (7, 3, 5, False)
    assert args.output_dir == cli.DEFAULT_OUTPUT_DIR
    text = " ".join(parser.format_help().split())
    for flag, default in (("--epochs", "7"), ("--batch-size", "3"), ("--seed", "5")):
        assert flag in text
        assert f"(default: {default})" in text


@pytest.mark.parametrize("flag", [["--epochs", "0"], ["--batch-size", "-2"], ["--epochs", "x"],
                                  ["--backend", "theano"]])
def test_bad_flag_values_exit_2(flag, capsys):
    parser = cli.make_parser("demo", epochs=1, batch_size=1)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(flag)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_select_backend_rejects_unknown_and_missing(monkeypatch):
    with pytest.raises(BackendError, match="unknown backend"):
        cli.select_backend("cntk")
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendError, match="not installed"):
        cli.select_backend("jax")


def test_select_backend_refuses_to_switch_after_keras_import():
    import keras

    other = next(b for b in cli.BACKENDS if b != keras.backend.backend())
    if cli.importlib.util.find_spec(other) is None:
        pytest.skip(f"{other} is not installed")
    with pytest.raises(BackendError, match="already running"):
        cli.select_backend(other)


def test_configured_backend_reads_keras_json(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert cli.configured_backend() == "tensorflow"
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    assert cli.configured_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert cli.configured_backend() == "torch"


def test_preselect_backend_exits_2_on_bad_choice(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.preselect_backend(["--backend=cntk"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_friendly_errors_turns_tutorial_error_into_one_line(capsys):
    @cli.friendly_errors
    def main(argv=None):
        raise TutorialError("the file is missing: put it in data/")

    assert main([]) == 2
    err = capsys.readouterr().err
    assert err == "error: the file is missing: put it in data/\n"


def test_friendly_errors_keeps_tracebacks_for_bugs():
    @cli.friendly_errors
    def main(argv=None):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        main([])


def test_parse_errors_are_one_line_without_usage(capsys):
    parser = cli.make_parser("demo", epochs=1, batch_size=1)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--epochs", "0", "--no-such-flag"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "usage" not in err


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "0", "-1"])
def test_positive_float_rejects_non_finite_and_non_positive(text):
    with pytest.raises(cli.argparse.ArgumentTypeError):
        cli.positive_float(text)
    assert cli.positive_float("1e-3") == 0.001


def test_int_in_names_the_allowed_range():
    check = cli.int_in(2, 5)
    assert check("5") == 5
    with pytest.raises(cli.argparse.ArgumentTypeError, match="allowed 2 to 5"):
        check("6")


def test_friendly_errors_memory_error_is_one_line(capsys):
    @cli.friendly_errors
    def main(argv=None):
        raise MemoryError

    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: out of memory")


def test_friendly_errors_broken_pipe_is_quiet(capsys):
    @cli.friendly_errors
    def main(argv=None):
        raise BrokenPipeError

    assert main([]) == 0
    assert capsys.readouterr().err == ""


def test_multi_line_messages_are_joined(capsys):
    @cli.friendly_errors
    def main(argv=None):
        raise TutorialError("first part\nsecond part")

    assert main([]) == 2
    assert capsys.readouterr().err == "error: first part second part\n"
