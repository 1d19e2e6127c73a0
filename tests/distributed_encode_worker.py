"""Worker for test_encoders: encode a tiny corpus (under torchrun when launched so) and save the embeddings.

Usage: python distributed_encode_worker.py MODEL_DIR OUT_FILE
"""

from __future__ import annotations

import sys

import torch

from lir_robust.encoders.base import barrier, init_distributed, world
from lir_robust.encoders.text import TextEncoder

TEXTS = [f"the wing lift study {'data ' * (index % 7)} number {index} ." for index in range(23)]

if __name__ == "__main__":
    model_dir, out_file = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    init_distributed()
    encoder = TextEncoder.from_spec(model_dir, batch_size=4, show_progress=False)
    embeddings = encoder.encode_documents(TEXTS)
    rank, size = world()
    if rank == 0:
        torch.save({"embeddings": embeddings, "world": size, "encoded_here": encoder.items_encoded}, out_file)
    if size > 1:  # both ranks leave together: a rank tearing gloo down while the other still works aborts it
        barrier()
        torch.distributed.destroy_process_group()
