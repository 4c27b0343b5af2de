@echo off
rem Run FaceLab's tests in its venv (setup.bat first). Extra arguments go to pytest.
cd /d "%~dp0"
if not exist "_internal\venv\Scripts\python.exe" (echo error: FaceLab is not set up yet: run setup.bat first & exit /b 2)
"_internal\venv\Scripts\python.exe" -m pytest %*
