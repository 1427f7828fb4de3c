#!/usr/bin/env python3
"""Validate the manifests `builder k8s` writes.

Kubernetes' built-in kinds against Kubernetes' own OpenAPI schemas (PyPI kubernetes-validate,
strict: unknown fields are errors), at the pinned Kubernetes version; KServe's kinds against the
openAPIV3Schema of KServe's CustomResourceDefinitions (serving.kserve.io_*.yaml) with a JSON-schema
validator. Prints one line per object; exits 1 if any object is invalid.

    validate_manifests.py --crds DIR FILE.yaml...
"""
import argparse
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.34.0"


def crd_schemas(crd_dir):
    """{(group/version, kind): openAPIV3Schema} from every CRD file in crd_dir."""
    schemas = {}
    for path in sorted(Path(crd_dir).glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def validate(doc, schemas):
    """None if valid, else the reason."""
    api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if api.startswith("serving.kserve.io/"):
        schema = schemas.get((api, kind))
        if schema is None:
            return f"no CRD schema for {api} {kind}"
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        # A CRD schema's `metadata` is just an object: check what the API server would.
        name = doc.get("metadata", {}).get("name", "")
        if not name:
            return "metadata.name is missing"
        return "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors) or None
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(map(str, e.path))}: {e.message}"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crds", required=True, help="folder of KServe CRD YAML files")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    schemas = crd_schemas(args.crds)
    if not schemas:
        sys.exit(f"no CustomResourceDefinition in {args.crds}")
    failed = 0
    for file in args.files:
        for doc in yaml.safe_load_all(Path(file).read_text()):
            if not doc:
                continue
            what = f"{file}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            problem = validate(doc, schemas)
            print(f"{'INVALID' if problem else 'valid'} {what}{': ' + problem if problem else ''}")
            failed += bool(problem)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
