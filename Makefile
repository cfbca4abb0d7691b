# The Tornado bundle. `make` lists the targets; `make run` and `make test` are all a new machine
# with Docker, Python 3 and make needs.

IMAGE ?= tornado-bundle:latest
# The Dockerfile's builder stage (the venv with pip): app images install their dependencies there.
BUILDER_IMAGE ?= tornado-bundle:builder
EXAMPLE_IMAGE ?= tornado-bundle-example:latest
BASE_IMAGE ?= debian:trixie-slim
CONTAINER ?= tornado-bundle
# make run publishes the bundle here; HOST_ADDRESS=0.0.0.0 exposes it beyond this machine.
HOST_ADDRESS ?= 127.0.0.1
HOST_PORT ?= 80
# Extra `docker run` options for make run, e.g. RUN_OPTIONS="-e WORKERS=4".
RUN_OPTIONS ?=
VENV ?= tests/.venv
BENCH_VENV ?= bench/.venv
SEED_IMAGE ?= tornado-bundle-seed:bench
PYTHON ?= python3
# pytest options, e.g. PYTEST_ARGS="-k round_robin -x".
PYTEST_ARGS ?=
# bench/run.py options, e.g. BENCH_ARGS="--rounds 3 --seconds 10".
BENCH_ARGS ?=
# tests/mutate.py: which mutations (numbers), e.g. MUTATIONS="1 4"; all when empty.
MUTATIONS ?=

SHELL_SCRIPTS := base-image/build.sh container/entrypoint.sh container/entrypoint.d/* \
	container/bin/* bench/seed/start.sh swarm-lab/lab.sh .ci/run
PYTHON_SOURCES := main.py tornado_bundle harness examples tests bench/run.py bench/tornado_alone.py swarm-lab

.DEFAULT_GOAL := help
.PHONY: help lock mutations build base-image example run stop logs status shell reload reload-tls swarm-lab swarm-lab-down test unit lint docs golden bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build the image (pulls the base image, or builds it from Debian's packages when it cannot)
	@docker image inspect $(BASE_IMAGE) >/dev/null 2>&1 || docker pull --quiet $(BASE_IMAGE) >/dev/null 2>&1 \
		|| { echo "make: cannot pull $(BASE_IMAGE); building it from Debian's packages (make base-image)"; \
		     $(MAKE) --no-print-directory base-image; }
	docker build --quiet --build-arg BASE_IMAGE=$(BASE_IMAGE) --target builder --tag $(BUILDER_IMAGE) .
	docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) --tag $(IMAGE) .

base-image: ## build the base image from Debian's packages (no registry needed; root, debootstrap)
	sh base-image/build.sh $(BASE_IMAGE)

example: build ## build examples/chat FROM the bundle (an app in its own image)
	docker build --build-arg BUNDLE_IMAGE=$(IMAGE) --build-arg BUNDLE_BUILDER=$(BUILDER_IMAGE) \
		--tag $(EXAMPLE_IMAGE) examples/chat

run: build ## build, then run the bundle detached on 127.0.0.1:80 (HOST_PORT=8080 make run)
	@docker rm --force $(CONTAINER) >/dev/null 2>&1 || true
	docker run --detach --name $(CONTAINER) --publish $(HOST_ADDRESS):$(HOST_PORT):80 $(RUN_OPTIONS) $(IMAGE)
	@echo "The bundle is starting at http://$(HOST_ADDRESS):$(HOST_PORT)/ (make logs, make status, make stop)"

stop: ## stop and remove the container started by make run
	docker rm --force $(CONTAINER)

logs: ## follow the container's logs (nginx access lines, Tornado, Supervisor)
	docker logs --follow $(CONTAINER)

status: ## supervisorctl status in the running container
	docker exec $(CONTAINER) supervisorctl status

shell: ## a shell in the running container
	docker exec --interactive --tty $(CONTAINER) /bin/sh

reload: ## restart the Tornado instances one at a time, without failing a request
	docker exec $(CONTAINER) rolling-restart

reload-tls: ## load a renewed certificate (same file names): nginx re-reads it, no request fails
	docker exec $(CONTAINER) supervisorctl signal HUP nginx

# The swarm lab's name (interfaces, namespaces, /run/$(LAB)) and the front's port on 127.0.0.1.
LAB ?= tblab
LAB_FRONT_PORT ?= 8088

swarm-lab: build $(VENV)/.installed ## a 4-engine Swarm here, the stack on it, a front on 127.0.0.1:8088 (root)
	LAB=$(LAB) swarm-lab/lab.sh up $(IMAGE)
	$(VENV)/bin/python swarm-lab/stack.py $(IMAGE) 4 >/run/$(LAB)/stack.yaml
	LAB=$(LAB) swarm-lab/lab.sh docker m1 stack deploy --resolve-image never -c /run/$(LAB)/stack.yaml tblab
	@echo "make: the front runs in the foreground (Ctrl-C stops it; make swarm-lab-down removes the lab)"
	LAB=$(LAB) swarm-lab/lab.sh front $(LAB_FRONT_PORT) tblab_tornado $(IMAGE)

swarm-lab-down: ## remove the swarm lab: processes, namespaces, bridge, mounts, data
	LAB=$(LAB) swarm-lab/lab.sh down

# A virtualenv with pinned, hashed requirements: $(call make-venv,DIR,REQUIREMENTS_FILE).
define make-venv
	@$(PYTHON) -m venv $(1) || { echo "make: '$(PYTHON) -m venv' failed; on Debian or Ubuntu: apt-get install python3-venv"; exit 1; }
	$(1)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r $(2)
	@touch $(1)/.installed
endef

$(VENV)/.installed: tests/requirements-dev.txt requirements.txt
	$(call make-venv,$(VENV),tests/requirements-dev.txt)

test: lint build $(VENV)/.installed ## lint, build the image, run every test against it
	IMAGE=$(IMAGE) BUILDER_IMAGE=$(BUILDER_IMAGE) $(VENV)/bin/pytest tests $(PYTEST_ARGS)

unit: $(VENV)/.installed ## only the tests that need no Docker (tests/unit)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

docs: $(VENV)/.installed ## regenerate docs/configuration.md from the settings table
	$(VENV)/bin/python -m tornado_bundle.settings >docs/configuration.md

golden: $(VENV)/.installed ## rewrite tests/unit/golden/ after a deliberate change to the nginx files
	UPDATE_GOLDEN=1 $(VENV)/bin/pytest -q tests/unit/test_golden.py

lint: $(VENV)/.installed ## ruff, shellcheck, hadolint, yamllint (no Docker needed; gixy runs in the tests)
	$(VENV)/bin/ruff check --config tests/ruff.toml $(PYTHON_SOURCES)
	$(VENV)/bin/ruff format --check --config tests/ruff.toml $(PYTHON_SOURCES)
	$(VENV)/bin/shellcheck $(SHELL_SCRIPTS)
	$(VENV)/bin/hadolint Dockerfile bench/seed/Dockerfile examples/chat/Dockerfile \
		tests/apps/Dockerfile
	$(VENV)/bin/yamllint --strict -c deploy/.yamllint.yaml deploy

$(BENCH_VENV)/.installed: bench/requirements.txt
	$(call make-venv,$(BENCH_VENV),bench/requirements.txt)

bench: build $(BENCH_VENV)/.installed ## measure against the seed's setup, Tornado alone and nginx alone
	docker build --quiet --build-arg IMAGE=$(IMAGE) --tag $(SEED_IMAGE) bench/seed >/dev/null
	$(BENCH_VENV)/bin/python bench/run.py --image $(IMAGE) --seed-image $(SEED_IMAGE) \
		--base-image $(BASE_IMAGE) $(BENCH_ARGS)

mutations: build $(VENV)/.installed ## break the code on purpose and check that the tests notice (~15 min)
	IMAGE=$(IMAGE) BUILDER_IMAGE=$(BUILDER_IMAGE) $(VENV)/bin/python tests/mutate.py $(MUTATIONS)

# pip-compile from each .in file; the pins (exact versions, every file's hash) go into the .txt.
PIP_COMPILE = $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --no-header \
	--no-emit-index-url --no-emit-find-links --strip-extras

lock: $(VENV)/.installed ## regenerate every lock file with hashes from its .in file (needs PyPI)
	cd tests && ../$(PIP_COMPILE) -o requirements-dev.txt requirements-dev.in
	cd bench && ../$(PIP_COMPILE) -o requirements.txt requirements.in
	cd examples/chat && ../../$(PIP_COMPILE) -o requirements.txt requirements.in
	cd tests/apps/blog_app && ../../../$(PIP_COMPILE) -o requirements.txt requirements.in

clean: ## remove the make run container, the image, test containers and the tools' venv
	-docker rm --force $(CONTAINER) 2>/dev/null
	-docker ps -aq --filter name=tornado-bundle-test- --filter name=tornado-bundle-bench- \
		| xargs -r docker rm --force
	-docker image rm $(IMAGE) $(BUILDER_IMAGE) $(EXAMPLE_IMAGE) $(SEED_IMAGE) 2>/dev/null
	rm -rf $(VENV) $(BENCH_VENV) tests/__pycache__ tests/.pytest_cache
