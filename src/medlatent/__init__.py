"""MedLatent: the MedVAE recipe as a reproducible Snakemake workflow."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy exports: `import medlatent` stays light for the Snakefile and the CLI."""
    if name == "load_latents":
        from medlatent.latents.loader import load_latents

        return load_latents
    raise AttributeError(f"module 'medlatent' has no attribute {name!r}")
