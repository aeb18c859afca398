# The operator image; serving Pods also run it as their init container
# (`modelreg fetch-artifact`).
#
# BASE is any image with Python >= 3.11 and its `venv` module at `python3`.
# The public slim image is the default; the dev cluster builds this same file
# on a Debian base it makes itself (`--build-arg BASE=...`, see
# operator/modelreg/devcluster/images.py).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# A virtualenv holds the package and its dependencies, so the final stage
# copies one directory and needs no pip of its own (a distribution's Python
# refuses `pip install` outside a venv anyway: PEP 668).
RUN python3 -m venv /opt/modelreg
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# The dev cluster (modelreg.devcluster: Go builds, PKI, process supervision)
# is a developer tool the operator never imports (tests/unit/test_import_boundaries.py),
# so it is removed from the source before the wheel is built: the installed
# package simply lacks it (pip's record stays consistent), and `modelreg
# devcluster ...` here says so in one line. Done here rather than in
# pyproject.toml because `pip install -e .` (make setup) must keep it; no
# extras, so its dependencies (cryptography) stay out too.
RUN rm -rf operator/modelreg/devcluster \
    && /opt/modelreg/bin/pip install --no-cache-dir . \
    && /opt/modelreg/bin/pip uninstall --yes pip setuptools

FROM ${BASE}
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin modelreg
COPY --from=build /opt/modelreg /opt/modelreg
ENV PATH=/opt/modelreg/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so `runAsNonRoot` can check it without reading /etc/passwd.
USER 65532:65532
ENTRYPOINT ["modelreg"]
CMD ["run"]
