from setuptools import find_packages, setup

setup(
    name="pfo",
    version="0.1.0",
    description="Probability Flow Optimization: binary-feedback LLM alignment with DeepSpeed",
    packages=find_packages(include=["pfo", "pfo.*"]),
    python_requires=">=3.10",
    # torch stays a range so GPU users keep their CUDA build; the CPU pin is in requirements/cpu.txt.
    install_requires=[
        "torch>=2.4",
        "deepspeed>=0.15",
        "transformers>=4.46",
        "datasets>=3.0",
        "pyarrow>=15",
        "accelerate>=1.0",
        "pyyaml",
        "tqdm",
        "pandas",
        "matplotlib",
    ],
    extras_require={
        "gpu": ["flash-attn>=2.6"],
        "offline-data": ["gguf>=0.10"],
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["pfo=pfo.cli:main"]},
)
