"""Channel groups as plain records: the parameter rows removed together, and where they flow.

:class:`ChannelGroup` and :class:`Member` are what users see (``channel_groups`` returns them);
:class:`Touch` and :class:`TracedGroup` add the live modules that verification and compaction
need. The graph adapter (``masking.pruning.graph``) builds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["ChannelGroup", "CompactionError", "Member", "Touch", "TracedGroup"]


class CompactionError(RuntimeError):
    """A model, layer or channel selection that cannot be compacted; the message names the layer."""


@dataclass(frozen=True)
class Member:
    """Rows of one parameter that belong to a channel group.

    Attributes:
        module: qualified name of the module (as in ``model.named_modules()``).
        param: ``"weight"`` or ``"bias"``.
        dim: the dimension of the parameter that indexes channels.
        rows: indices along ``dim``.
        channels: for each entry of ``rows``, the channel of the group it belongs to.
    """

    module: str
    param: str
    dim: int
    rows: tuple[int, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are removed together, numbered by the output channels of ``root``.

    Attributes:
        root: qualified name of the module whose output channels define the numbering.
        size: number of channels in the group.
        members: the output-side parameters: zeroing the rows of channel ``c`` in every member
            silences channel ``c`` everywhere it flows. Input-side parameters (the next layer's
            ``dim 1``) are not members.
        modules: every module the group touches (output and input side), in model order.
    """

    root: str
    size: int
    members: tuple[Member, ...]
    modules: tuple[str, ...]


@dataclass(frozen=True)
class Touch:
    """One module's part in a group: which of its channel indices map to which group channel.

    ``side`` is ``"out"`` for the output side (including layers that couple input and output
    channels one to one: batch norm, depthwise convolution, PReLU) and ``"in"`` for layers that
    read the group's channels. ``idxs`` index the module's output channels (``"out"``) or its input
    features (``"in"``; after a flatten, one channel spans several features).
    """

    name: str
    module: nn.Module
    side: str
    idxs: tuple[int, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class TracedGroup:
    """A compactable group with the touches ``compact`` needs to remove its channels."""

    group: ChannelGroup
    touches: tuple[Touch, ...]
