"""``MLP``: the one multilayer perceptron builder of structnets' models.

::

    sizes[0] ─Linear─► sizes[1] ─act─(dropout)─► ... ─Linear─► sizes[-1] (─act) (─norm)

Layers sit in one ``nn.Sequential`` in that order and nothing else, so a state dict names
them by position (``0.weight``, ``2.weight``, ...), as the hand-written ``Sequential``
stacks it replaces did, and checkpoints trained with those still load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["MLP"]


class MLP(nn.Sequential):
    """Linear layers of widths ``sizes``, an activation after every one but the last.

    ``h_{k+1} = act(W_k h_k + b_k)`` for the hidden layers, ``y = W h + b`` for the last
    (followed by ``act`` too if ``activate_last``), then ``norm`` if given (the LayerNorm
    that Sanchez-Gonzalez et al. put after their encoder and processor MLPs).

    Args:
        sizes: input width, hidden widths, output width (at least two entries).
        activation: builds each activation module (a class such as ``nn.ReLU``).
        activate_last: also apply the activation after the last linear layer.
        dropout: None for no dropout layers; a probability adds an ``nn.Dropout`` after
            every hidden activation (even for 0.0, keeping the layer positions fixed).
        norm: builds a normalisation of the output width (``nn.LayerNorm``), or None.
        bias: whether the linear layers have biases.

    Shapes:
        input: ``[..., sizes[0]]``; returns ``[..., sizes[-1]]``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        activation: Callable[[], nn.Module] = nn.ReLU,
        activate_last: bool = False,
        dropout: float | None = None,
        norm: Callable[[int], nn.Module] | None = None,
        bias: bool = True,
    ) -> None:
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs an input and an output width, got sizes {list(sizes)}")
        layers: list[nn.Module] = []
        last = len(sizes) - 2
        for k, (width, out) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(width, out, bias=bias))
            if k < last or activate_last:
                layers.append(activation())
            if k < last and dropout is not None:
                layers.append(nn.Dropout(dropout))
        if norm is not None:
            layers.append(norm(sizes[-1]))
        super().__init__(*layers)
        self.sizes = tuple(sizes)
