from setuptools import find_packages, setup

setup(
    name="tinyvision",
    version="0.1.0",
    description="Design memory-efficient CNNs in Keras and deploy them with TFLM on microcontrollers",
    python_requires=">=3.10",
    packages=find_packages(include=["tinyvision*", "models*", "converters*"]),
    package_data={"": ["*.txt", "*.json"], "tflm_app": ["*"]},
    install_requires=[
        "tensorflow==2.21.*",
        "tf_keras==2.21.*",
        "tensorflow-model-optimization>=0.8",
        "numpy",
        "absl-py",
        "tflite-micro",
        "matplotlib",
        # tflite-support 0.4.4 pins protobuf<4, which breaks TensorFlow: it is installed
        # with --no-deps (see README), so it is not listed here.
    ],
    extras_require={"test": ["pytest", "hypothesis"]},
    entry_points={"console_scripts": ["tinyvision=converters.cli.main:main"]},
)
