"""Experiments with electra_hf, run from the repository root as modules:

    python -m experiments.rtd_vs_mlm   # ELECTRA (replaced token detection) vs masked LM at equal compute

Tables, JSON and plots go to experiments/results/; checkpoints and caches to experiments/runs/ (not committed).
"""
