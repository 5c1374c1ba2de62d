# The two commands: `make demo` runs logsub's main job on the local stack;
# `make test` runs every check and test against it. Both install what is missing.

# Builds are cached outside the repository, shared by every clone on the machine.
LOGSUB_CACHE ?= $(if $(filter 0,$(shell id -u)),/var/cache/logsub,$(HOME)/.cache/logsub)
export CARGO_TARGET_DIR ?= $(LOGSUB_CACHE)/cargo-target

.PHONY: test demo stack-up stack-down crd fmt
test:
	hack/test.sh

demo:
	hack/demo.sh

stack-up:
	hack/stack.sh up

stack-down:
	hack/stack.sh down

# Regenerates the committed CRD (and the chart's copy) from the Rust types.
crd:
	cargo run --quiet -- crd > crds/logsubscription.yaml
	cp crds/logsubscription.yaml charts/logsub/crds/logsubscription.yaml

fmt:
	cargo fmt
	gofmt -w hack/localnode
