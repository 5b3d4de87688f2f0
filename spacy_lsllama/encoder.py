"""The PyTorch module that thinc wraps: piece rows in, float32 hidden states out."""
import torch

from .attention import model_attention_mask


class SpanEncoder(torch.nn.Module):
    """Run a (LoRA-adapted) decoder over right-padded piece rows.

    - Position ids count from 0 in every row, as right padding requires.
    - Rows longer than `max_length` are cut into consecutive windows that run
      as separate rows and are stitched back, so no piece is ever dropped.
    - The final hidden states leave as float32 whatever the compute dtype
      (NumPy and CuPy have no bfloat16); autograd casts the gradients back.
    """

    def __init__(self, transformer: torch.nn.Module, *, bidirectional: bool, max_length: int):
        super().__init__()
        self.transformer = transformer
        self.bidirectional = bidirectional
        self.max_length = max_length

    @property
    def hidden_dtype(self) -> torch.dtype:
        return self.transformer.get_input_embeddings().weight.dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        n_rows, length = input_ids.shape
        if length <= self.max_length:
            return self._encode(input_ids, attention_mask)
        n_windows = -(-length // self.max_length)
        padding = n_windows * self.max_length - length
        window_ids = torch.nn.functional.pad(input_ids, (0, padding)).reshape(-1, self.max_length)
        window_mask = torch.nn.functional.pad(attention_mask, (0, padding)).reshape(-1, self.max_length)
        used = window_mask.any(dim=1).nonzero().squeeze(1)
        hidden = self._encode(window_ids[used], window_mask[used])
        width = hidden.shape[-1]
        stitched = hidden.new_zeros((window_ids.shape[0], self.max_length, width))
        stitched = stitched.index_copy(0, used, hidden)
        return stitched.reshape(n_rows, n_windows * self.max_length, width)[:, :length]

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
