"""``openrft demo``: fine-tune smollm2-135m-instruct on a generated multiple-choice arithmetic task on the
embedded service, and compare held-out accuracy before and after."""
