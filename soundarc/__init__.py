"""soundarc: sound event classification and embedding, trained with the Angular Contrastive Loss."""


def version() -> str:
    """The installed package's version ("dev" when run from a source tree, as in the service image)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("soundarc")
    except PackageNotFoundError:
        return "dev"
