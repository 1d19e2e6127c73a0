"""The one place that imports colpali-engine (installed as lir_robust.patches)."""
