from setuptools import find_packages, setup

setup(
    name="tinyvision",
    version="0.1.0",
    description="Design memory-efficient CNNs in Keras and deploy them with TFLM on microcontrollers",
    python_requires=">=3.10",
    # tflm_app/ (the device runtime and sketch template the Arduino export copies) is installed as
    # converters/export/tflm_app, where converters.export.arduino finds it outside a checkout.
    packages=find_packages(include=["tinyvision*", "models*", "converters*"]) + ["converters.export.tflm_app"],
    package_dir={"converters.export.tflm_app": "tflm_app"},
    package_data={"": ["*.txt", "*.json"], "converters.export.tflm_app": ["*.h", "*.cpp", "*.ino", "*.md", "harness/*"]},
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
    extras_require={"test": ["pytest", "pytest-xdist", "hypothesis"]},
    entry_points={"console_scripts": ["tinyvision=converters.cli.main:main"]},
)
