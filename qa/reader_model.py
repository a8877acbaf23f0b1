"""The reader as a torch model: built from the base weights, trained by qa.train_reader, and
exported to ONNX by qa.reader. Only those import it (it imports torch and transformers)."""

from __future__ import annotations

import torch


def build_model(base_path: str, layers: int, span: bool = False) -> CrossEncoder:
    """The base BERT cut to its lower `layers` layers, with a fresh one-unit head (and, with
    `span`, a fresh two-unit span head on every token)."""
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(base_path, add_pooling_layer=False)
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers = layers
    size = bert.config.hidden_size
    return CrossEncoder(bert, torch.nn.Linear(size, 1),
                        torch.nn.Linear(size, 2) if span else None)


class CrossEncoder(torch.nn.Module):
    """BERT layers and a linear head on the [CLS] state: one logit per pair. With a span head,
    `forward(..., spans=True)` also gives each token's start and end logits (an extractive
    reader's, as for SQuAD 2.0: a pair with no answer points at [CLS])."""

    def __init__(self, bert, head, span=None):
        super().__init__()
        self.bert = bert
        self.head = head
        self.span = span

    def forward(self, input_ids, attention_mask, token_type_ids, spans: bool = False):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state
        logit = self.head(h[:, 0]).squeeze(-1)
        if not spans:
            return logit
        assert self.span is not None, "this reader has no span head"
        start, end = self.span(h).unbind(-1)
        return logit, start, end

    def trained_state(self) -> dict:
        """The parameters training changes (everything but the frozen embeddings)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("bert.embeddings.")}
