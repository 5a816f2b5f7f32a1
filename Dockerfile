# SpotOn images. Two targets:
#   cpu  (the default, last stage): python:3.11-slim; NanoDet + EfficientNet-Lite0 on the CPU.
#   cuda: NVIDIA's CUDA runtime image; torch's CUDA wheels run Faster R-CNN / CLIP on the GPU (detector and
#         embedder `auto` pick them when CUDA is there). Needs the NVIDIA Container Toolkit on the host
#         (`docker run --gpus all`, or the compose profile `gpu`).
# Every image runs any role: `spoton serve` (single process or `--role api`), `spoton worker`.

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS cuda
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/spoton
ENV PATH=/opt/spoton/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /srv/spoton
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir .
COPY environments ./environments
ENV SPOTON_HOST=0.0.0.0 SPOTON_PORT=8000 SPOTON_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
ENV SPOTON_WORKER_HEALTH_PORT=8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s CMD python3 -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["spoton", "worker"]

FROM python:3.11-slim AS cpu
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/spoton
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir .
COPY environments ./environments

ENV SPOTON_HOST=0.0.0.0 SPOTON_PORT=8000 SPOTON_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["spoton", "serve"]
