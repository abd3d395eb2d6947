"""gapkit.progress: bars shown in a terminal, Jupyter or when asked; hidden otherwise."""

import io
import logging
import re
import sys
import warnings

import pytest

from gapkit import progress as P


class _TTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(P.ENV, raising=False)


def _run_bar(**kw):
    bar = P.progress_bar(range(5), desc="work", mininterval=0, **kw)
    assert list(bar) == [0, 1, 2, 3, 4]  # iterates whether shown or not
    bar.close()
    return bar


def test_bar_is_off_when_stderr_is_not_a_tty(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert not P.progress_enabled()
    bar = _run_bar()
    assert bar.disable and err.getvalue() == ""


def test_bar_is_on_in_a_terminal(monkeypatch):
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    assert P.progress_enabled()
    _run_bar()
    assert "work" in err.getvalue() and "5/5" in err.getvalue()


@pytest.mark.parametrize("how", ["argument", "env"])
def test_bar_is_on_when_forced(monkeypatch, how):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    if how == "env":
        monkeypatch.setenv(P.ENV, "1")
        _run_bar()
    else:
        _run_bar(progress=True)
    assert "work" in err.getvalue() and "5/5" in err.getvalue()


def test_false_wins_over_a_terminal_and_the_env(monkeypatch):
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv(P.ENV, "1")
    _run_bar(progress=False)
    assert err.getvalue() == ""
    monkeypatch.setenv(P.ENV, "off")
    assert not P.progress_enabled()


def test_bad_env_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(P.ENV, "maybe")
    with pytest.raises(ValueError, match="GAPKIT_PROGRESS='maybe': expected one of 1, true"):
        P.progress_enabled()


def test_jupyter_without_ipywidgets_uses_the_text_bar_without_a_warning(monkeypatch):
    """In a kernel the bar is on by default; without ipywidgets it is the text bar and
    nothing warns (tqdm.auto would emit a TqdmWarning there)."""
    pytest.importorskip("tqdm.notebook")
    import tqdm.notebook as nb

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(P, "in_jupyter", lambda: True)
    monkeypatch.setattr(nb, "IProgress", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = _run_bar()
    assert type(bar) is P.text_tqdm and "5/5" in err.getvalue()


def test_notebook_bars_keep_the_top_one_and_drop_nested_ones(monkeypatch):
    """tqdm.notebook reads leave=None as False; the helper keeps the outer bar."""
    class Widget(P.text_tqdm):
        pass

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(P, "_bar_class", lambda file: Widget)
    outer = P.progress_bar(total=2, desc="outer", progress=True)
    inner = P.progress_bar(total=2, desc="inner", progress=True)
    try:
        assert type(outer) is Widget and outer.leave is True and inner.leave is False
    finally:
        inner.close()
        outer.close()
    top = P.progress_bar(total=1, desc="top", progress=True, leave=False)
    assert top.leave is False  # an explicit choice is kept
    top.close()


def test_in_jupyter_is_false_in_a_plain_process():
    assert P.in_jupyter() is ("ipykernel.zmqshell" in sys.modules)


def test_logging_redirect_keeps_bar_lines_whole(monkeypatch):
    """A record logged while a bar is drawn starts on its own line, and the console
    handler keeps its level (INFO hidden at WARNING)."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    log = logging.getLogger("gapkit.test_progress")
    log.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        with P.logging_redirect(log):
            assert handler not in log.handlers
            bar = P.progress_bar(total=3, desc="bar", progress=True, mininterval=0)
            bar.update(1)
            log.warning("half way")
            log.info("hidden")
            bar.update(2)
            bar.close()
        assert log.handlers == [handler]
    finally:
        log.removeHandler(handler)
        log.propagate = True
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", err.getvalue())  # cursor moves of tqdm
    lines = text.replace("\r", "\n").splitlines()
    assert "LOG half way" in lines  # a whole line, not glued to a bar
    assert "hidden" not in err.getvalue()


def _tiny_gap(**kw):
    from gapkit import GAP, SOAP

    return GAP(SOAP(r_cut=3.5, n_max=3, l_max=2, sigma=0.5), n_sparse=20, e0="zero",
               random_state=0, chunk_size=4, **kw)


def test_fit_and_predict_with_progress_forced_write_bars_to_stderr(train_frames, capfd):
    """verbose=True: every stage of the fit (sparse points, descriptors and rows per chunk,
    factorisation, evidence optimisation, solve, calibration) and predict over several
    batches draw a bar on stderr; stdout stays clean."""
    frames = train_frames[:16]
    model = _tiny_gap(verbose=True, optimize=True).fit(frames)
    model.predict(frames, return_std=True)
    out, err = capfd.readouterr()
    assert out == ""
    for desc in ("sparse points", "factorise K_MM", "optimise evidence", "solve", "calibrate",
                 "predict", "std"):
        assert f"{desc}:" in err, desc
    assert "chunk/s]" in err  # the descriptors and training rows, per chunk
    assert "16/16" in err  # the prediction bar went through every frame


def test_fit_without_a_terminal_draws_no_bar(train_frames, capfd):
    """verbose=None (the default) off a terminal: nothing on stderr from the bars."""
    _tiny_gap(calibrate=False).fit(train_frames[:8]).predict(train_frames[:8])
    assert "sparse points" not in capfd.readouterr().err
