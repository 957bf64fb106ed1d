"""The one stage-1 mask function against masks written out by hand (queries q1 q2; text [CLS] a dog [PAD])."""

import pytest
import torch

from lavislite.common.errors import ConfigError
from lavislite.models.blip2.qformer import stage1_attention_mask

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

TEXT_MASK = torch.tensor([[1, 1, 1, 0]])

HAND = {
    # columns: q1 q2 CLS a dog PAD
    "itc": [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 0],
    ],
    "itm": [[1, 1, 1, 1, 1, 0]] * 6,
    "itg": [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 0],
    ],
}


@pytest.mark.parametrize("kind", ["itc", "itm", "itg"])
def test_masks_equal_hand_built(kind):
    assert stage1_attention_mask(kind, TEXT_MASK, 2).tolist() == [HAND[kind]]


def test_mask_errors():
    with pytest.raises(ConfigError, match="itx"):
        stage1_attention_mask("itx", TEXT_MASK, 2)
    with pytest.raises(ValueError, match="batch"):
        stage1_attention_mask("itc", TEXT_MASK[0], 2)


def test_itc_joint_pass_equals_separate_passes(build_tiny):
    """The uni-modal mask over [queries; text] in one pass gives LAVIS's two separate ITC passes."""
    model = build_tiny("blip2").eval()
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids, mask = model.tokenize(["a red circle", "two small shapes on a table"], padding="longest")
    q = model.num_query_token
    with torch.no_grad():
        embeds = model.image_embeds(image)
        joint = model.Qformer.bert(ids, stage1_attention_mask("itc", mask, q), query_embeds=model.query_tokens.expand(2, -1, -1),
                                   encoder_hidden_states=embeds).last_hidden_state
        queries = model.query_output(embeds).last_hidden_state
        text = model.Qformer.bert(ids, mask, mode="text").last_hidden_state
    torch.testing.assert_close(joint[:, :q], queries, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(joint[:, q:], text, atol=1e-6, rtol=1e-6)
