@echo off
rem Called by every numbered .bat: finds FaceLab's Python and workspace.
set "FACELAB_ROOT=%~dp0.."
set "FACELAB_PYTHON=%~dp0venv\Scripts\python.exe"
if not defined FACELAB_WORKSPACE set "FACELAB_WORKSPACE=%~dp0..\workspace"
if not exist "%FACELAB_PYTHON%" (
    echo error: FaceLab is not set up yet: double-click setup.bat first
    exit /b 2
)
exit /b 0
