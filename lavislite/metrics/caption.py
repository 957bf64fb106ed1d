"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr, SPICE) via pycocoevalcap.

Same numbers as ``pycocoevalcap.eval.COCOEvalCap`` restricted to the result ids (what BLIP and LAVIS do:
``coco_eval.params['image_id'] = coco_result.getImgIds()``), with three differences in *how* they are
computed, none in *what*:

* The Java tools run with time limits and are always reaped: the PTB tokenizer and SPICE through
  ``subprocess.run(timeout=...)``, METEOR's long-lived JVM under a watchdog that kills it, so a stuck JVM
  raises an error instead of hanging an evaluation, and no JVM outlives the call.
* References and candidates are tokenized in one JVM start (pycocoevalcap starts it twice); the PTB
  tokenizer works line by line, so the tokens are identical.
* Temporary files go to a private temporary directory, not into the installed package directory.

SPICE needs Stanford CoreNLP 3.6.0, which pycocoevalcap downloads on first use. When that download (or
SPICE itself) fails, e.g. offline, the result has ``SPICE: None`` and a ``spice_unavailable`` reason.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Hashable, Mapping, Sequence

from lavislite.common.errors import DataError, LavisliteError
from lavislite.metrics._inputs import match_ids, type_name

__all__ = ["EvalToolError", "coco_caption_scores", "ptb_tokenize", "spice_models_present"]

CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
_JAVA_HINT = "install a Java runtime (8 or newer), e.g. `apt-get install default-jre-headless`, and put `java` on PATH"


class EvalToolError(LavisliteError, RuntimeError):
    """An external evaluation tool (Java, pycocoevalcap) is missing, failed or timed out."""


# -- locating the tools ------------------------------------------------------------------------------
def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise EvalToolError(f"caption metrics need Java for the PTB tokenizer and METEOR, but `java` is not on PATH: {_JAVA_HINT}")
    return java


@lru_cache(maxsize=1)
def _package_dir() -> Path:
    try:
        from pycocoevalcap.tokenizer import ptbtokenizer
    except ImportError as exc:
        raise EvalToolError(f"caption metrics need pycocoevalcap ({exc}); install it with `pip install pycocoevalcap`") from exc
    return Path(ptbtokenizer.__file__).resolve().parent.parent


def _java_error(text: bytes | str | None) -> str:
    """The first exception line of a Java stack trace (the useful part), else the output's tail."""
    tail = _tail(text, 100_000)
    for line in tail.splitlines():
        if "Exception" in line or "Error" in line:
            return line.strip()[:300]
    return tail[-300:]


def _tail(text: bytes | str | None, n: int = 600) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    return text[-n:]


# -- PTB tokenizer -----------------------------------------------------------------------------------
def ptb_tokenize(sentences: Sequence[str], *, timeout: float = 600.0) -> list[str]:
    """Tokenize like ``pycocoevalcap.tokenizer.PTBTokenizer``: Stanford PTB, lower-cased, punctuation dropped.

    One JVM start for the whole list; one output string per input sentence.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

    java = _require_java()
    jar_dir = _package_dir() / "tokenizer"
    if not sentences:
        return []
    text = "\n".join(s.replace("\n", " ") for s in sentences)
    with tempfile.TemporaryDirectory(prefix="lavislite_ptb_") as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_bytes(text.encode())
        cmd = [java, "-cp", str(jar_dir / STANFORD_CORENLP_3_4_1_JAR), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", str(path)]
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise EvalToolError(f"PTB tokenizer (Java) did not finish within {timeout:g} s on {len(sentences)} sentences") from exc
    if proc.returncode != 0:
        raise EvalToolError(f"PTB tokenizer (Java) failed with exit code {proc.returncode}: {_java_error(proc.stderr)}")
    lines = proc.stdout.decode().split("\n")
    if len(lines) < len(sentences):
        raise EvalToolError(
            f"PTB tokenizer returned {len(lines)} lines for {len(sentences)} sentences; its output cannot be aligned"
        )
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines[: len(sentences)]]


# -- METEOR ------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _meteor_class():
    from pycocoevalcap.meteor.meteor import Meteor

    class BoundedMeteor(Meteor):
        """pycocoevalcap's Meteor whose JVM can be killed without deadlocking ``__del__``.

        The parent's ``__del__`` takes the lock that a failed ``compute_score`` never released, which
        would hang garbage collection; this one only reaps the process.
        """

        def close(self) -> None:
            proc = getattr(self, "meteor_p", None)
            if proc is None:
                return
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    stream.close()
                except (OSError, ValueError):
                    pass
            if proc.poll() is None:
                proc.kill()
            proc.wait()

        def __del__(self) -> None:
            self.close()

    return BoundedMeteor


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]], timeout: float) -> float:
    meteor = _meteor_class()()
    proc = meteor.meteor_p
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    watchdog = threading.Timer(timeout, kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        score, _ = meteor.compute_score(gts, res)
        return float(score)
    except (ValueError, OSError) as exc:  # a dead JVM shows up as an empty line or a broken pipe
        proc.kill()
        proc.wait()
        if timed_out.is_set():
            raise EvalToolError(f"METEOR (Java) did not finish within {timeout:g} s on {len(res)} captions") from exc
        raise EvalToolError(f"METEOR (Java) failed (exit code {proc.returncode}): {_java_error(proc.stderr.read())}") from exc
    finally:
        watchdog.cancel()
        meteor.close()


# -- SPICE -------------------------------------------------------------------------------------------
def _spice_model_jars() -> list[Path]:
    from pycocoevalcap.spice import get_stanford_models as gsm

    lib = _package_dir() / "spice" / gsm.SPICELIB
    return [lib / f"{gsm.JAR}.jar", lib / f"{gsm.JAR}-models.jar"]


def spice_models_present() -> bool:
    """Whether the Stanford CoreNLP jars SPICE needs are installed (pycocoevalcap downloads them once)."""
    return all(p.is_file() for p in _spice_model_jars())


def _fetch_spice_models(timeout: float) -> str | None:
    """Run pycocoevalcap's one-time CoreNLP download in a child process; return a reason on failure."""
    code = "from pycocoevalcap.spice.get_stanford_models import get_stanford_models; get_stanford_models()"
    try:
        proc = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"downloading Stanford CoreNLP for SPICE did not finish within {timeout:g} s"
    if proc.returncode != 0 or not spice_models_present():
        last = _tail(proc.stderr, 300).splitlines()
        return (
            f"Stanford CoreNLP for SPICE is missing ({_spice_model_jars()[0]}) and could not be downloaded"
            f" ({last[-1] if last else 'no error message'}); run `python -m pycocoevalcap.spice.get_stanford_models`"
            " once with internet access"
        )
    return None


def _spice(gts: dict[int, list[str]], res: dict[int, list[str]], timeout: float, cache_dir: str | None):
    """Return (score, None) or (None, reason). Never raises for SPICE's own failures."""
    if not spice_models_present():
        reason = _fetch_spice_models(timeout)
        if reason is not None:
            return None, reason
    from pycocoevalcap.spice.spice import SPICE_JAR

    spice_dir = _package_dir() / "spice"
    items = [{"image_id": k, "test": res[k][0], "refs": gts[k]} for k in sorted(res)]
    with tempfile.TemporaryDirectory(prefix="lavislite_spice_") as tmp:
        in_file, out_file = Path(tmp) / "in.json", Path(tmp) / "out.json"
        in_file.write_text(json.dumps(items))
        cmd = [_require_java(), "-jar", "-Xmx8G", SPICE_JAR, str(in_file), "-out", str(out_file), "-subset", "-silent"]
        if cache_dir is not None:
            os.makedirs(cache_dir, exist_ok=True)
            cmd[5:5] = ["-cache", str(cache_dir)]
        try:
            proc = subprocess.run(cmd, cwd=spice_dir, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"SPICE (Java) did not finish within {timeout:g} s"
        if proc.returncode != 0 or not out_file.is_file():
            return None, f"SPICE (Java) failed with exit code {proc.returncode}: {_java_error(proc.stderr) or _java_error(proc.stdout)}"
        try:
            results = json.loads(out_file.read_text())
            scores = [_to_float(item["scores"]["All"]["f"]) for item in results]
        except (ValueError, KeyError, TypeError) as exc:
            return None, f"SPICE wrote an unreadable result file: {exc}"
    if len(scores) != len(items):
        return None, f"SPICE scored {len(scores)} of {len(items)} captions"
    return sum(scores) / len(scores), None


def _to_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan  # pycocoevalcap's float_convert: a missing score poisons the mean, as there


# -- public entry point ------------------------------------------------------------------------------
def _check_inputs(gts: Mapping, res: Mapping) -> list[tuple[str, list[str]]]:
    if not isinstance(gts, Mapping) or not isinstance(res, Mapping):
        raise DataError(
            f"coco_caption_scores: gts and res must be dicts (id -> captions / id -> caption), got {type_name(gts)} and {type_name(res)}"
        )
    rows = []
    for res_id, gt_id in match_ids(res, gts, what="coco_caption_scores"):
        cand = res[res_id]
        if isinstance(cand, (list, tuple)) and len(cand) == 1:
            cand = cand[0]
        if not isinstance(cand, str):
            raise DataError(f"coco_caption_scores: result {res_id!r} must be one caption string, got {type_name(cand)}: {cand!r:.80}")
        refs = gts[gt_id]
        if isinstance(refs, str) or not isinstance(refs, Sequence) or not refs:
            raise DataError(f"coco_caption_scores: ground truth {gt_id!r} must be a non-empty list of caption strings, got {refs!r:.80}")
        for ref in refs:
            if not isinstance(ref, str):
                raise DataError(f"coco_caption_scores: ground truth {gt_id!r} holds a {type_name(ref)} ({ref!r:.80}); captions must be strings")
        rows.append((cand, list(refs)))
    return rows


def coco_caption_scores(
    gts: Mapping[Hashable, Sequence[str]],
    res: Mapping[Hashable, str],
    *,
    spice: bool = True,
    timeout: float = 600.0,
    spice_timeout: float = 1800.0,
    spice_cache_dir: str | None = None,
) -> dict[str, float | str | None]:
    """COCO caption metrics of ``res`` (id -> generated caption) against ``gts`` (id -> reference captions).

    Only the ids in ``res`` are evaluated (ids may be ints or their string form); ``gts`` may hold more.
    Returns fractions in [0, 1] (CIDEr can exceed 1) under pycocoevalcap's names: ``Bleu_1``..``Bleu_4``,
    ``METEOR``, ``ROUGE_L``, ``CIDEr``, ``SPICE``. ``SPICE`` is None when it was disabled or could not run,
    and then ``spice_unavailable`` says why. ``timeout`` bounds each of the tokenizer and METEOR runs,
    ``spice_timeout`` the CoreNLP download and the SPICE run (each).

    Raises DataError for bad inputs and EvalToolError when Java or pycocoevalcap is missing or the
    tokenizer / METEOR fail or time out.
    """
    rows = _check_inputs(gts, res)
    _package_dir()
    _require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    flat = [cand for cand, _ in rows] + [ref for _, refs in rows for ref in refs]
    tokens = ptb_tokenize(flat, timeout=timeout)
    # Internal ids are positions: the tools only need consistent keys, and ints serialise safely for SPICE.
    tok_res, tok_gts, pos = {}, {}, len(rows)
    for i, (_, refs) in enumerate(rows):
        tok_res[i] = [tokens[i]]
        tok_gts[i] = tokens[pos : pos + len(refs)]
        pos += len(refs)

    bleu, _ = Bleu(4).compute_score(tok_gts, tok_res, verbose=0)
    out: dict[str, float | str | None] = {f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
    out["METEOR"] = _meteor(tok_gts, tok_res, timeout)
    out["ROUGE_L"] = float(Rouge().compute_score(tok_gts, tok_res)[0])
    out["CIDEr"] = float(Cider().compute_score(tok_gts, tok_res)[0])
    if spice:
        out["SPICE"], reason = _spice(tok_gts, tok_res, spice_timeout, spice_cache_dir)
    else:
        out["SPICE"], reason = None, "disabled (spice=False)"
    if reason is not None:
        out["spice_unavailable"] = reason
    return out
