"""Metrics computed from saved per-example outputs with numpy only, shared by `evaluate` (which writes the
outputs and its rows' values) and `report` (which recomputes and resamples them) without either importing
the other or torch."""
