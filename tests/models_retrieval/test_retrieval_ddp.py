"""Two gloo processes (torchrun): features gathered across ranks in forward (queues, idx, negatives)."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist
    from lavislite.common.config import model_type_config
    from lavislite.common.registry import registry
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    texts = ["a red circle on the left", "a blue square", "two small shapes", "an orange triangle"] * 5
    vocab_dir = os.path.join(sys.argv[1], f"vocab{rank}")
    build_wordpiece_vocab(texts, 80, vocab_dir)
    tok = init_tokenizer(vocab_dir)
    med = {"vocab_size": len(tok), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 64, "max_position_embeddings": 64}

    def build_tiny(arch, **over):
        cls = registry.get_model_class(arch)
        cfg = model_type_config(cls, "tiny", {"med_overrides": med, **over})
        torch.manual_seed(0)  # same weights on both ranks, as DDP would have
        return cls.from_config(cfg.model, tokenizer=tok)

    torch.manual_seed(100 + rank)
    image = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([10 * rank, 10 * rank + 1])
    samples = {"image": image, "text_input": texts[2 * rank: 2 * rank + 2], "image_id": ids}

    m = build_tiny("blip_retrieval", negative_all_rank=True, queue_size=16)
    out = m(samples)
    out.loss.backward()
    assert int(m.ptr_queue) == 4, m.ptr_queue
    assert m.idx_queue[0, :4].tolist() == [0, 1, 10, 11], m.idx_queue
    queues = [torch.zeros_like(m.text_queue) for _ in range(2)]
    dist.all_gather(queues, m.text_queue.contiguous())
    assert torch.equal(queues[0], queues[1])
    assert m.visual_encoder.patch_embed.proj.weight.grad.abs().sum() > 0

    p = build_tiny("blip_pretrain", queue_size=16)
    p(samples).loss.backward()
    assert int(p.queue_ptr) == 4
    dist.barrier()
    print(f"rank {rank} ok", flush=True)
    dist.destroy_process_group()
    """
)


def test_two_process_gather_in_forward(tmp_path):
    script = tmp_path / "ddp_forward.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0", "--rdzv_backend=c10d",
           "--rdzv_endpoint=localhost:0", str(script), str(tmp_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"2-process run timed out: {e.stdout} {e.stderr}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 0 ok" in proc.stdout and "rank 1 ok" in proc.stdout
