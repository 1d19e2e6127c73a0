"""Text-level attacks: text an adversary can write, re-encoded through the model under test (never patched vectors).

- :mod:`~lir_robust.attacks.text.queries`: the seeded 50/50 query split, k-means over the training queries' mean
  vectors, the training queries' most frequent content words (everything an attacker may know);
- :mod:`~lir_robust.attacks.text.blackbox`: passages and edits made without gradients (cluster text, keyword stuffing,
  the held-out query's own text as a ceiling);
- :mod:`~lir_robust.attacks.text.hotflip`: adversarial passages optimised by HotFlip through the model AND the pooling
  head under test (Zhong et al., EMNLP 2023);
- :mod:`~lir_robust.attacks.text.insertion`: snippets (HotFlip passages) placed in existing documents, appended or at
  a seeded sentence boundary;
- :mod:`~lir_robust.attacks.text.evaluate`: re-encoding of the changed documents only, and the metrics on the
  held-out queries (success@k, nDCG@10 retained, hijack rate);
- :mod:`~lir_robust.attacks.text.pipeline`: ``TextAttackConfig`` + ``run_text_attack(config, out_dir)``.
"""
