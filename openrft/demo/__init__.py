"""``openrft demo``: fine-tune smollm2-135m-instruct on a generated customer-message classification task on the
embedded service, and compare held-out accuracy before and after."""
