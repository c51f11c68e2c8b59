"""TFLite graph tools: conversion, graph passes, planning, export and the CLI."""
