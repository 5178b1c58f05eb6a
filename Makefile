# Entry points for people and CI. The scripts under hack/ do the work.
.PHONY: test crds lint control-plane

## Run every test tier (installs etcd and builds kube-apiserver on first use).
test:
	hack/test.sh

## Regenerate the committed CRD YAML after changing src/api.
crds:
	cargo run --quiet -- crd --output-dir crds

## Formatting and lints, as CI runs them.
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings
