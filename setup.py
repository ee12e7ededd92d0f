"""textgen: a TFX pipeline that turns raw text into a character-level RNN generator."""
from setuptools import setup

setup(
    name="textgen",
    version="0.1.0",
    description="Raw text → TFX pipeline → character-level RNN text generator served by TF Serving",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # The top-level packages follow TFX's templates, so Transform and Trainer can name
    # their code by dotted path (models.preprocessing.preprocessing_fn) instead of a
    # module_file that TFX would turn into a wheel and pip-install per component.
    packages=["pipeline", "components", "models", "serving"],
    # Dependencies are pinned in requirements/lock.txt and installed by `make install`
    # with uv (pip backtracks for hours over this stack); these are the direct ones.
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        "tensorflow-transform==1.16.0",
        "tensorflow-model-analysis==0.47.1",
        "tensorflow-serving-api==2.16.1",
        "apache-beam",
        "dill",
        "pyyaml",
    ],
    entry_points={"console_scripts": ["textgen=pipeline.cli:main"]},
)
