"""The PyTorch module that thinc wraps: piece rows in, float32 hidden states out."""
import warnings
from typing import Iterator, Tuple

import torch

from .attention import model_attention_mask


class LongSpanWarning(UserWarning):
    """A span is longer than the decoder reads in one pass; it runs in windows."""


class SpanEncoder(torch.nn.Module):
    """Run a (LoRA-adapted) decoder over right-padded piece rows.

    - Position ids count from 0 in every row, as right padding requires.
    - Rows longer than `max_length` are cut into consecutive windows that run
      as separate rows and are stitched back, so no piece is ever dropped; a
      window does not see the windows before it, which `LongSpanWarning` says.
    - Rows (or windows) are grouped by length into decoder calls of at most
      `max_batch_pieces` padded pieces each (one row at least), each call
      padded only to its own longest row (see `_calls`): the peak memory of a
      call does not grow with the number or length of the docs in a batch,
      and short rows do not pay for long ones.
    - The final hidden states leave as float32 whatever the compute dtype
      (NumPy and CuPy have no bfloat16); autograd casts the gradients back.
    """

    def __init__(
        self, transformer: torch.nn.Module, *, bidirectional: bool, max_length: int, max_batch_pieces: int
    ):
        super().__init__()
        self.transformer = transformer
        self.bidirectional = bidirectional
        self.max_length = max_length
        self.max_batch_pieces = max_batch_pieces

    @property
    def hidden_dtype(self) -> torch.dtype:
        return self.transformer.get_input_embeddings().weight.dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        n_rows, length = input_ids.shape
        if length > self.max_length:
            warnings.warn(
                f"A span of {length} pieces is longer than max_length ({self.max_length}, the model's "
                "positions unless set): it runs as consecutive windows, and no piece sees the text of "
                "the windows before its own. A causal classifier's last token then reads only the "
                "last window. Use shorter spans (get_spans) or split such docs.",
                LongSpanWarning,
                stacklevel=2,
            )
        n_windows = -(-length // self.max_length)
        window = min(length, self.max_length)
        padding = n_windows * window - length
        window_ids = torch.nn.functional.pad(input_ids, (0, padding)).reshape(-1, window)
        window_mask = torch.nn.functional.pad(attention_mask, (0, padding)).reshape(-1, window)
        calls = list(
            _calls(window_mask.sum(dim=1).long(), self.max_batch_pieces, bound_padding=input_ids.device.type == "cpu")
        )
        hidden = [
            torch.nn.functional.pad(
                self._encode(window_ids[rows, :longest], window_mask[rows, :longest]), (0, 0, 0, window - longest)
            )
            for rows, longest in calls
        ]
        order = torch.cat([rows for rows, _ in calls])
        stitched = hidden[0].new_zeros((window_ids.shape[0], window, hidden[0].shape[-1]))
        stitched = stitched.index_copy(0, order, torch.cat(hidden))
        return stitched.reshape(n_rows, n_windows * window, -1)[:, :length]

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Padding is masked, so its ids only need to exist in the embedding table.
        real = attention_mask.bool()
        input_ids = input_ids.masked_fill(~real, 0)
        # A row of only padding would leave its queries nothing to attend to.
        empty_rows = ~real.any(dim=1)
        if bool(empty_rows.any()):
            real = real.clone()
            real[empty_rows, 0] = True
        mask = model_attention_mask(
            real.long(), bidirectional=self.bidirectional, dtype=self.hidden_dtype
        )
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        output = self.transformer(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
            return_dict=True,
        )
        return output.last_hidden_state.float()


# A row joins a call on the CPU only if its padding stays within an eighth of
# the call's longest row (at least a few pieces, below which another call costs
# more than the padding it saves). A GPU computes padding in parallel for
# nearly nothing, and each call costs it kernel launches: there rows are
# grouped by length into calls bounded by pieces alone.
ROW_SLACK_DIVISOR = 8
ROW_SLACK_MIN = 4


def _calls(lengths: torch.Tensor, max_pieces: int, *, bound_padding: bool) -> Iterator[Tuple[torch.Tensor, int]]:
    """Group rows into decoder calls of at most `max_pieces` padded pieces,
    longest rows first; yields each call's row indices and longest length.

    Sorting by length before cutting calls is what sentence-transformers'
    `encode` does and bounding calls by pieces what text-embeddings-inference
    does; with `bound_padding`, a call also ends where the next row is shorter
    than its longest by more than the slack, so short rows never pay for a
    long one. Rows of only padding are left out (their vectors stay zero)."""
    row_lengths = lengths.tolist()
    order = sorted(range(len(row_lengths)), key=lambda row: -row_lengths[row])
    used = [row for row in order if row_lengths[row] > 0] or order[:1]
    start = 0
    while start < len(used):
        longest = max(1, row_lengths[used[start]])
        shortest = longest - max(ROW_SLACK_MIN, longest // ROW_SLACK_DIVISOR) if bound_padding else 0
        end = start + 1
        while end < len(used) and (end - start + 1) * longest <= max_pieces and row_lengths[used[end]] >= shortest:
            end += 1
        yield torch.tensor(used[start:end], dtype=torch.long, device=lengths.device), longest
        start = end
