# Entry points for people and CI. The scripts under hack/ do the work.
.PHONY: test crds lint demo demo-stop

## Run every test tier (installs etcd and builds kube-apiserver on first use).
test:
	hack/test.sh

## Regenerate the committed CRD YAML after changing src/api, and copy the CRDs and alert rules
## into the Helm chart (tests/chart.rs checks the copies are identical).
crds:
	cargo run --quiet -- crd --output-dir crds
	rm -f charts/amazon-seller-operator/crds/*.yaml
	cp crds/*.yaml charts/amazon-seller-operator/crds/
	cp deploy/prometheus/alerts.yaml charts/amazon-seller-operator/files/alerts.yaml

## Formatting and lints, as CI runs them.
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings

## The operator's whole job on a local control plane with an LWA emulator (no cluster, no Amazon).
## `make demo CREDENTIALS=DIR` uses real LWA credentials from files in DIR and Amazon's endpoint.
demo:
	ASO_DEMO_CREDENTIALS="$(or $(CREDENTIALS),$(ASO_DEMO_CREDENTIALS))" hack/demo.sh

## Stop what `make demo` started.
demo-stop:
	hack/demo.sh stop
