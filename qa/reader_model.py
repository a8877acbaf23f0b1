"""The reader as a torch model: built from the base weights, trained by qa.train_reader, and
exported to ONNX by qa.reader. Only those import it (it imports torch and transformers)."""

from __future__ import annotations

import torch


def build_model(base_path: str, layers: int) -> CrossEncoder:
    """The base BERT cut to its lower `layers` layers, with a fresh one-unit head."""
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(base_path, add_pooling_layer=False)
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers = layers
    return CrossEncoder(bert, torch.nn.Linear(bert.config.hidden_size, 1))


class CrossEncoder(torch.nn.Module):
    """BERT layers and a linear head on the [CLS] state: one logit per pair."""

    def __init__(self, bert, head):
        super().__init__()
        self.bert = bert
        self.head = head

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state
        return self.head(h[:, 0]).squeeze(-1)

    def trained_state(self) -> dict:
        """The parameters training changes (everything but the frozen embeddings)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("bert.embeddings.")}
