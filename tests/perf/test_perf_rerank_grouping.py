"""The re-ranking levers of lavislite/tasks/rerank.py: pairs grouped by image (one ITM call per image and
chunk), a pair shared by both directions scored once, unused padding columns dropped, same scores."""

import torch

from lavislite.tasks.rerank import itm_pair_logits, rerank_both_directions, trim_padding


class CountingItm:
    """itm_logits = f(image, text) that ignores masked positions; records every call's shapes."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []  # (images, texts, text columns)

    def itm_logits(self, tokens, ids, atts, image_atts=None):
        self.calls.append((tokens.shape[0], ids.shape[0], ids.shape[1]))
        r = ids.shape[0] // tokens.shape[0]
        img = tokens.sum((1, 2)).repeat_interleave(r)
        txt = (ids.float() * atts).sum(1) / atts.sum(1)
        return torch.sin(img * 0.1 + txt * 0.01)


class Feats:
    def __init__(self, n_img=6, n_txt=20, length=12, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.image_tokens = torch.randn(n_img, 5, 3, generator=g)
        self.text_ids = torch.randint(1, 99, (n_txt, length), generator=g)
        lens = torch.randint(2, length // 2, (n_txt,), generator=g)
        self.text_atts = (torch.arange(length)[None] < lens[:, None]).long()
        self.text_ids = self.text_ids * self.text_atts
        self.sims = torch.randn(n_img, n_txt, generator=g)


def one_pair(feats, i, t):
    return CountingItm().itm_logits(feats.image_tokens[i : i + 1], feats.text_ids[t : t + 1], feats.text_atts[t : t + 1])[0]


def test_pairs_grouped_by_image_deduplicated_and_trimmed():
    f = Feats()
    images = torch.tensor([3, 0, 3, 3, 0, 5])
    texts = torch.tensor([1, 2, 1, 7, 9, 4])  # (3, 1) twice
    model = CountingItm()
    got = itm_pair_logits(model, f.image_tokens, f.text_ids, f.text_atts, images, texts, max_pairs=100)
    want = torch.stack([one_pair(f, int(i), int(t)) for i, t in zip(images, texts)])
    torch.testing.assert_close(got, want)
    assert sorted(c[:2] for c in model.calls) == [(1, 1), (1, 2), (1, 2)]  # images 5, 0, 3: 5 distinct pairs
    assert all(cols < f.text_ids.shape[1] for _, _, cols in model.calls)  # padding dropped


def test_chunks_bound_texts_per_call():
    f = Feats()
    model = CountingItm()
    images, texts = torch.zeros(15, dtype=torch.long), torch.arange(15)
    itm_pair_logits(model, f.image_tokens, f.text_ids, f.text_atts, images, texts, max_pairs=4)
    assert [c[1] for c in model.calls] == [4, 4, 4, 3]


def test_both_directions_equal_per_query_scores():
    f = Feats()
    model = CountingItm()
    (i_idx, i_sc), (t_idx, t_sc) = rerank_both_directions(f.sims, f, model, range(6), 4, range(20), 3, pairs_per_batch=8)
    for q in range(6):
        top_sim, top = f.sims[q].topk(4)
        assert torch.equal(i_idx[q], top)
        torch.testing.assert_close(i_sc[q], torch.stack([one_pair(f, q, int(t)) for t in top]) + top_sim)
    for q in range(20):
        top_sim, top = f.sims[:, q].topk(3)
        assert torch.equal(t_idx[q], top)
        torch.testing.assert_close(t_sc[q], torch.stack([one_pair(f, int(i), q) for i in top]) + top_sim)
    distinct = {(q, int(t)) for q in range(6) for t in i_idx[q]} | {(int(i), q) for q in range(20) for i in t_idx[q]}
    assert sum(c[1] for c in model.calls) == len(distinct) < 6 * 4 + 20 * 3


def test_trim_padding_keeps_used_columns():
    ids = torch.tensor([[5, 6, 0, 0], [5, 0, 0, 0]])
    atts = (ids > 0).long()
    a, b = trim_padding(ids, atts)
    assert a.tolist() == [[5, 6], [5, 0]] and b.tolist() == [[1, 1], [1, 0]]
