"""The prediction trace for a person: a short text (the run's report, `jaxpipe trace`)
and `trace.png` (the input, hidden activations as heat strips, probabilities as bars).
Functions of the trace record (`jaxpipe.saved.trace`); matplotlib loads only to draw."""

from __future__ import annotations

from typing import Any

from jaxpipe.report.charts import save_png

__all__ = ["format_trace", "trace_figure", "write_trace_png"]

_SHOWN = 6  # input features and classes listed in the text before "..."
_NAMES = {
    "relu": "ReLU",
    "gelu": "GELU",
    "silu": "SiLU",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "elu": "ELU",
    "leaky_relu": "leaky ReLU",
    "softplus": "softplus",
    "softmax": "Softmax",
    "identity": "linear",
}


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _input_line(layer: dict[str, Any]) -> str:
    names, scaled = layer["features"], layer["scaled"]
    shown = ", ".join(f"{n} {s:.2f}" for n, s in zip(names[:_SHOWN], scaled[:_SHOWN]))
    more = f", ... ({len(names)} features)" if len(names) > _SHOWN else ""
    return f"{len(names)} features, {layer['normalize']}-scaled: {shown}{more}"


def _hidden_line(layer: dict[str, Any]) -> str:
    strongest = ", ".join(f"#{u['unit']} {u['value']:.2f}" for u in layer["strongest"])
    pre = layer["pre_activation"]
    return (
        f"{layer['units']} units, {layer['active']} active; strongest {strongest}; "
        f"pre-activation {pre['min']:.2f} .. {pre['max']:.2f}"
    )


def _output_line(layer: dict[str, Any]) -> str:
    if "probabilities" not in layer:
        return f"value {layer['value']:.4g} (standardised target)"
    probs = sorted(layer["probabilities"].items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{c} {p:.3f}" for c, p in probs[:_SHOWN])
    more = f" (top {_SHOWN} of {len(probs)})" if len(probs) > _SHOWN else ""
    return shown + more


def _prediction_line(record: dict[str, Any]) -> str:
    p = record["prediction"]
    label = p.get("label")
    if record["task"] == "regression":
        text = f"{p['value']:.4g}"
        if label is not None:
            text += f" (true value {label:.4g}, error {p['value'] - label:+.3g})"
        return text
    text = f"{p['class']} (probability {p['probability']:.3f})"
    if label is not None:
        text += f"; true label {label} " + ("(right)" if label == p["class"] else "(wrong)")
    return text


def format_trace(record: dict[str, Any], title: str | None = None) -> str:
    """Input → Hidden (activation) → Output (Softmax) → Prediction, one line a layer."""
    rows: list[tuple[str, str]] = []
    for layer in record["layers"]:
        kind = layer["kind"]
        if kind == "input":
            rows.append(("Input", _input_line(layer)))
        elif kind == "hidden":
            n = layer["name"].rpartition("_")[2]
            act = _NAMES.get(layer["activation"], layer["activation"])
            rows.append((f"Hidden {int(n) + 1} ({act})", _hidden_line(layer)))
        else:
            rows.append((f"Output ({_NAMES[layer['activation']]})", _output_line(layer)))
    rows.append(("Prediction", _prediction_line(record)))
    width = max(len(name) for name, _ in rows)
    where = record.get("source")
    head = title or (
        f"Prediction trace ({'validation row' if where == 'validation' else where + ', row'} "
        f"{record.get('row', 0)})"
    )
    return "\n".join([head] + [f"  {name:<{width}}  {text}" for name, text in rows])


def write_trace_png(record: dict[str, Any], path: str, what: str | None = None) -> None:
    """trace.png: `trace_figure(record)` saved to `path`. `what` names `path` in errors
    (`--png P`) when the user chose it."""
    save_png(trace_figure(record), path, what=what)


def trace_figure(record: dict[str, Any]) -> Any:
    """The trace as a matplotlib Figure: the scaled input with each encoded feature named
    (`x0`, `kind=u`), each hidden layer's activations as a heat strip over its units, the
    probabilities as bars (the prediction highlighted), or the regression value."""
    # A Figure on an Agg canvas, not pyplot: pyplot's import adds about half a second
    # to every run (the run's report draws this), for nothing a file needs.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = record["layers"]
    strips = layers[:-1]  # input and hidden layers
    names = list(layers[0]["features"])
    shown = _named_ticks(len(names))
    size = 8 if len(shown) <= 30 else 7
    # Room under the input strip for its names, written upwards: inches per character.
    label_in = 0.1 + size / 72 * 0.62 * max((len(names[i]) for i in shown), default=0)
    fig = Figure(figsize=(10, 1.2 * len(strips) + 3.2 + label_in))
    FigureCanvasAgg(fig)
    # Short names fit the gap under the strip; longer ones get a spacer row (which adds a
    # gap of its own, ~0.6 in, to the room it makes).
    spacer = [max(label_in - 1.05, 0.02) / 0.9] if label_in > 0.45 else []
    ratios = [1.0, *spacer] + [1.0] * (len(strips) - 1) + [2.6]
    grid = fig.add_gridspec(len(ratios), 1, height_ratios=ratios, hspace=0.6)
    rows = [0] + list(range(1 + len(spacer), len(strips) + len(spacer)))
    for row, layer in zip(rows, strips):
        ax = fig.add_subplot(grid[row])
        values = layer["scaled"] if layer["kind"] == "input" else layer["values"]
        image = ax.imshow([values], aspect="auto", cmap="viridis", interpolation="nearest")
        fig.colorbar(image, ax=ax, pad=0.01, fraction=0.03)
        ax.set_yticks([])
        if layer["kind"] == "input":
            ax.set_xticks(shown, [names[j] for j in shown], rotation=90, fontsize=size)
            more = "" if len(shown) == len(names) else f", one in {shown[1]} named"
            ax.set_title(
                f"Input: {len(values)} features ({layer['normalize']}-scaled{more})", loc="left"
            )
        else:
            act = _NAMES.get(layer["activation"], layer["activation"])
            ax.set_title(
                f"{layer['name']} ({act}): {layer['active']} of {layer['units']} active (x: unit)",
                loc="left",
            )
    ax = fig.add_subplot(grid[-1])
    _draw_output(ax, record)
    # Fixed margins in inches, not tight_layout(): it draws the figure once more to
    # measure it (~0.1 s of CPU on every run's trace.png).
    height = fig.get_figheight()
    classes = len(layers[-1].get("probabilities", ()))
    bottom = (1.0 if classes > 12 else 0.4) / height  # class names at 45° need more
    left = 0.06 if classes else 0.1  # a regression's bars are named "true value"
    fig.subplots_adjust(left=left, right=0.97, top=1 - 0.3 / height, bottom=bottom)
    return fig


def _named_ticks(n: int, most: int = 60) -> list[int]:
    """The input features named on the strip: all of up to `most`, else every k-th."""
    step = 1 if n <= most else -(-n // most)
    return list(range(0, n, step))


def _draw_output(ax: Any, record: dict[str, Any]) -> None:
    p = record["prediction"]
    out = record["layers"][-1]
    if "probabilities" not in out:
        label = p.get("label")
        names = ["prediction"] + (["true value"] if label is not None else [])
        values = [p["value"]] + ([label] if label is not None else [])
        ax.barh(names, values, color=["tab:blue", "tab:gray"][: len(values)])
        ax.set_title(f"Output (linear): prediction {p['value']:.4g}", loc="left")
        return
    classes = list(out["probabilities"])
    probs = [out["probabilities"][c] for c in classes]
    colors = ["tab:orange" if c == p["class"] else "tab:blue" for c in classes]
    ax.bar(range(len(classes)), probs, color=colors)
    ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 12 else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    truth = f", true label {p['label']}" if p.get("label") is not None else ""
    ax.set_title(
        f"Output (Softmax): predicted {p['class']} ({p['probability']:.3f}){truth}", loc="left"
    )
