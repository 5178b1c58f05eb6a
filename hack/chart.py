"""Renders, lints and schema-checks the Helm chart offline with helm-python-sdk (Helm's own Go
SDK behind a C ABI), for tests/chart.rs and tests/rbac.rs. Run it with the test venv's Python
(hack/test.sh installs it; see hack/chart-requirements.txt).

    python hack/chart.py render    CHART --values JSON --name NAME --namespace NS
    python hack/chart.py lint      CHART --values JSON --kube-version v1.33.0
    python hack/chart.py schema    CHART --values JSON
    python hack/chart.py install   CHART --values JSON --name NAME --namespace NS --kubeconfig FILE
                                   [--create-namespace]
    python hack/chart.py uninstall CHART --name NAME --namespace NS --kubeconfig FILE
    python hack/chart.py set       EXPRESSION
    python hack/chart.py version

Every command prints one JSON document on stdout. `schema` exits 1 when the values are
rejected, with Helm's message in "error". `install` and `uninstall` are `helm install` (without
--wait: a control plane without nodes never runs the pods) and `helm uninstall` against the
cluster of the kubeconfig; `install` prints the release's objects as `render` does. `set` parses
a `--set` expression as Helm does.
"""

import argparse
import json
import sys

import helm_python as helm
import yaml


def objects_of(manifest):
    """The objects of a rendered manifest, in order."""
    return [document for document in yaml.safe_load_all(manifest) if document]


def render(args):
    values = json.loads(args.values)
    with helm.Chart.load(args.chart) as chart:
        manifests = chart.render(
            values, name=args.name, namespace=args.namespace, is_install=True
        )
    objects = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append({"template": template, "object": document})
    return {"objects": objects, "notes": notes}


def lint(args):
    return helm.lint(
        args.chart,
        json.loads(args.values),
        strict=True,
        namespace=args.namespace,
        kube_version=args.kube_version,
    )


def schema(args):
    with helm.Chart.load(args.chart) as chart:
        try:
            chart.validate_schema(json.loads(args.values))
        except helm.HelmValuesError as err:
            return {"accepted": False, "error": str(err)}
    return {"accepted": True}


def install(args):
    with helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace) as config:
        release = config.install(
            args.chart,
            args.name,
            json.loads(args.values),
            namespace=args.namespace,
            create_namespace=args.create_namespace,
            timeout=120,
        )
    return {
        "status": release.get("status"),
        "objects": objects_of(release.get("manifest", "")),
    }


def uninstall(args):
    with helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace) as config:
        result = config.uninstall(args.name, timeout=120, ignore_not_found=True)
    return {"info": result.get("info", "")}


def set_expression(args):
    return helm.parse_set_string(args.expression)


def version(_args):
    return {
        "helm_python_sdk": helm.__version__,
        "helm_sdk": helm.helm_sdk_version(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, func in (
        ("render", render),
        ("lint", lint),
        ("schema", schema),
        ("install", install),
        ("uninstall", uninstall),
    ):
        command = commands.add_parser(name)
        command.add_argument("chart")
        command.add_argument("--values", default="{}")
        command.add_argument("--name", default="amazon-seller-operator")
        command.add_argument("--namespace", default="amazon-seller-operator")
        command.add_argument("--kube-version", default="v1.33.0")
        command.add_argument("--kubeconfig")
        command.add_argument("--create-namespace", action="store_true")
        command.set_defaults(func=func)
    command = commands.add_parser("set")
    command.add_argument("expression")
    command.set_defaults(func=set_expression)
    commands.add_parser("version").set_defaults(func=version)
    args = parser.parse_args()
    result = args.func(args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 1 if result.get("accepted") is False else 0


if __name__ == "__main__":
    sys.exit(main())
