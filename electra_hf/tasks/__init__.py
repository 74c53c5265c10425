"""Task tables for fine-tuning: one module per task family (GLUE, tagging, QA)."""
