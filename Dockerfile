# CPU image of SpotOn on embedded defaults. For CUDA, base on an nvidia/cuda runtime image instead.
FROM python:3.11-slim

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
