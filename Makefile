# The README's two commands: `make lab` (boot a lab kernel, attach gdb, show kp-list)
# and `make test` (the whole suite). Both install what is missing first.
KERNEL ?= 6.1
SCENARIO ?= default
KERNELS ?= 6.1,6.12,6.1-fp
# gdb 18.1 checks the plugin against a newer gdb's Python API, which does not change with
# the kernel: one kernel keeps `make test` well inside CI's hour (GDB18_KERNELS=6.1,6.12: both)
GDB18_KERNELS ?= 6.1
# arm64 kernels for `make test` (6.12-arm64 passes too: ARM64_KERNELS=6.1-arm64,6.12-arm64),
# run on the e2e files that support arm64 only (tests/e2e/test_arm64_*.py). Naming an arm64
# kernel anywhere runs setup-arm64 first; ARM64_KERNELS= leaves arm64 out.
ARM64_KERNELS ?= 6.1-arm64
ARM64_TESTS ?= $(wildcard tests/e2e/test_arm64_*.py)
GDB ?= gdb
GDB18 = .venv-gdb18/bin/gdb
PYTEST_ARGS ?=
VENV_PY = .venv/bin/python

.PHONY: setup setup-arm64 lab shell test unit kernels kernels-update kernels-check tutorial-check clean

setup:
	@sh qemu/setup.sh

# dpkg's arm64 architecture, qemu-system-aarch64, gdb-multiarch, the aarch64 cross compiler
setup-arm64:
	@sh qemu/setup-arm64.sh
arm64_setup = $(if $(findstring arm64,$(1)),setup-arm64)

# Lab kernels are a series and a flavour, resolved in Debian's archive when first fetched and
# then used from the cache (qemu/kernels.py). kernels-update moves the cache to the newest;
# kernels-check only asks the archive (no download) whether each still resolves.
kernels: setup $(call arm64_setup,$(KERNELS))
	$(VENV_PY) -m qemu.kernels $(subst $(comma), ,$(KERNELS))

kernels-update: setup $(call arm64_setup,$(KERNELS))
	$(VENV_PY) -m qemu.kernels --update $(subst $(comma), ,$(KERNELS))

kernels-check: setup $(call arm64_setup,$(KERNELS))
	$(VENV_PY) -m qemu.kernels --check $(subst $(comma), ,$(KERNELS))

# KERNEL: a lab kernel name, a Debian SERIES/FLAVOUR (6.1/rt-amd64), or the path of your own
# bzImage with VMLINUX=<its DWARF vmlinux> (and HEADERS=<kbuild tree> to build the lab modules).
lab: setup $(call arm64_setup,$(KERNEL))
	$(VENV_PY) -m qemu.lab --kernel $(KERNEL) --scenario $(SCENARIO) --gdb $(GDB) \
		$(if $(VMLINUX),--vmlinux "$(VMLINUX)") $(if $(HEADERS),--headers "$(HEADERS)") \
		$(if $(BATCH),--batch "$(BATCH)")

# The guest's shell on the serial console of the lab `make lab` runs (a second terminal).
shell:
	@$(VENV_PY) -m qemu.console

# Replay docs/tutorial.md on each kernel and compare every step's output shape
# (tests/e2e/test_tutorial.py runs the same per kernel inside `make test`).
tutorial-check: setup $(call arm64_setup,$(KERNELS))
	$(VENV_PY) -m qemu.kernels $(subst $(comma), ,$(KERNELS))
	$(VENV_PY) -m qemu.tutorial --kernels $(KERNELS) --gdb $(GDB)

# Unit tests and the e2e suite on every lab kernel with Debian's gdb 13, then the e2e suite
# again with gdb 18.1; then, when ARM64_KERNELS names any, the arm64 e2e files on them.
test: setup $(call arm64_setup,$(ARM64_KERNELS))
	$(VENV_PY) -m qemu.kernels --check $(subst $(comma), ,$(KERNELS))
	$(VENV_PY) -m qemu.kernels $(subst $(comma), ,$(KERNELS))
	$(VENV_PY) -m pytest -q tests --kernels $(KERNELS) --gdb $(GDB) $(PYTEST_ARGS)
	$(VENV_PY) -m pytest -q tests -m e2e --kernels $(GDB18_KERNELS) --gdb $(GDB18) $(PYTEST_ARGS)
	$(if $(ARM64_KERNELS),$(VENV_PY) -m qemu.kernels $(subst $(comma), ,$(ARM64_KERNELS)))
	$(if $(ARM64_KERNELS),$(VENV_PY) -m pytest -q $(ARM64_TESTS) --kernels $(ARM64_KERNELS) \
		--gdb $(GDB) $(PYTEST_ARGS))

unit: setup
	$(VENV_PY) -m pytest -q tests/unit $(PYTEST_ARGS)

# The "fast over a slow wire" benchmark (bench/run.py); KERNELS=6.1 runs one kernel.
.PHONY: bench
bench: setup
	$(VENV_PY) -m bench.run --kernels $(KERNELS) --gdb $(GDB) $(BENCH_ARGS)

# What the plugin costs on every stop (stepi, next, bt, finish) next to plain gdb
# (bench/step_cost.py); BENCH_ARGS="--baseline REV" adds the plugin at REV as a third side.
.PHONY: bench-step
bench-step: setup
	$(VENV_PY) -m bench.step_cost --kernels $(KERNELS) --gdb $(GDB) $(BENCH_ARGS)

clean:
	rm -rf .venv .venv-gdb18 .pytest_cache

comma := ,
