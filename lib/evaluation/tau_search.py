"""Post-hoc logit adjustment with tau chosen on the validation split (CADEL stage two, docs/methods/cadel.md;
Menon et al.): z'_c = z_c - tau log pi_c, pi_c = n_c / sum n (training counts).

For each prediction (a method's main logits and each member's), tau is the grid value with the highest
top-1 on the validation split (ties: the first in grid order); the report split is then evaluated with
that tau. The selection functions receive validation logits and labels only, so the choice cannot
depend on the report (test) labels; `posthoc_logit_adjustment` keeps the two apart. Optionally a temperature T
per prediction is then fitted on the validation logits adjusted with that tau (calibration.fit_temperature).
"""
import torch

from .calibration import fit_temperature
from .evaluator import adjust_logits, posthoc_logits
from .metrics import classification_report

GROUP_KEYS = ("top1", "many", "medium", "few")


def default_grid():
    """0.0, 0.1, ..., 2.0: the grid for a method that names none (CADEL names its own)."""
    return [round(0.1 * i, 1) for i in range(21)]


def top1(logits, labels):
    return (logits.argmax(1) == labels).float().mean().item() * 100 if len(labels) else 0.0


def tau_accuracies(logits, labels, counts, taus):
    """Top-1 (%) of z - tau log pi for each tau of the grid."""
    return [round(top1(adjust_logits(logits.float(), counts, t), labels), 4) for t in taus]


def select_tau(val_logits, val_labels, counts, taus):
    """(tau with the best validation top-1, first in grid order on ties; [top-1 per tau])."""
    if not len(taus):
        raise ValueError("empty tau grid")
    accs = tau_accuracies(val_logits, val_labels, counts, taus)
    best = max(range(len(taus)), key=lambda i: (accs[i], -i))
    return float(taus[best]), accs


def choose_taus(val_predictions, val_labels, counts, taus):
    """{prediction name: chosen tau}, {prediction name: [val top-1 per tau]} for a dict of val logits."""
    chosen, table = {}, {}
    for name, logits in val_predictions.items():
        chosen[name], table[name] = select_tau(logits, val_labels, counts, taus)
    return chosen, table


def choose_temperatures(val_predictions, val_labels, counts, taus_by_name):
    """{prediction name: T minimising the validation NLL of (z - tau log pi) / T}."""
    return {name: fit_temperature(adjust_logits(z.float(), counts, taus_by_name[name]), val_labels)
            for name, z in val_predictions.items()}


def report_with_taus(predictions, labels, counts, taus_by_name, rule="standard", main="main", temps_by_name=None):
    """classification_report of `main` adjusted with its tau (and scaled by its temperature, when given);
    report["members"] holds the others, each with its own; report["unadjusted"] the same predictions without
    adjustment (tau = 0, T = 1)."""
    temps = temps_by_name or {}

    def adjusted(k, v):
        return posthoc_logits(v.float(), counts, taus_by_name[k], temps.get(k, 1.0))

    report = classification_report(adjusted(main, predictions[main]), labels, counts, rule)
    report["members"] = {k: classification_report(adjusted(k, v), labels, counts, rule)
                         for k, v in predictions.items() if k != main}
    report["unadjusted"] = {k: {m: r[m] for m in GROUP_KEYS} for k, r in (
        (k, classification_report(v.float(), labels, counts, rule)) for k, v in predictions.items())}
    return report


def posthoc_logit_adjustment(val_predictions, val_labels, report_predictions, report_labels, counts, taus,
                             rule="standard", main="main"):
    """Choose tau per prediction on the validation split only, then report the report split with it.
    Returns (chosen {name: tau}, val table {name: [top-1 per tau]}, report on the report split)."""
    chosen, table = choose_taus(val_predictions, val_labels, counts, taus)
    report = report_with_taus(report_predictions, report_labels, counts, chosen, rule, main)
    return chosen, table, report


def table_rows(taus, table, chosen):
    """Rows [tau, val top-1 of each prediction] and the names, for the CSV / Markdown tau table."""
    names = list(table)
    rows = [[t] + [table[n][i] for n in names] for i, t in enumerate(taus)]
    return names, rows


def tau_table_markdown(taus, table, chosen, split_note=""):
    names, rows = table_rows(taus, table, chosen)
    lines = ["| tau | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        cells = []
        for n, v in zip(names, r[1:]):
            mark = "**" if float(r[0]) == chosen[n] else ""
            cells.append(f"{mark}{v:.2f}{mark}")
        lines.append(f"| {r[0]:g} | " + " | ".join(cells) + " |")
    head = f"Validation top-1 (%) per tau{split_note}; bold = chosen (best val top-1, first on ties)."
    return head + "\n\n" + "\n".join(lines) + "\n"


def tau_table_csv(taus, table, chosen):
    names, rows = table_rows(taus, table, chosen)
    out = ["tau," + ",".join(f"val_top1_{n}" for n in names)]
    out += [",".join([f"{r[0]:g}"] + [f"{v:.4f}" for v in r[1:]]) for r in rows]
    out.append("chosen," + ",".join(f"{chosen[n]:g}" for n in names))
    return "\n".join(out) + "\n"


def as_tensor_dict(main_logits, members):
    out = {"main": main_logits}
    out.update(members)
    return {k: torch.as_tensor(v) for k, v in out.items()}
