"""The stages of a run, each a function of one typed :class:`~trainer.stages.context.RunContext`:
prepare (rows, plan, models, grader, few-shot bank, estimate), references, sft, probe, rl (through an
algorithm of trainer/algorithms), the step loop (steps), validation, and finish. Augmentation and synthesis
live in trainer/augment.py and trainer/synthesis.py with their own helpers."""
