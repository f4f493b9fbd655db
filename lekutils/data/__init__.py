"""Data: prompt banks composed from team-written component banks, their diversity and held-out
checks, multi-turn conversations for distillation and training, and an optional LLM scenario writer.
"""
